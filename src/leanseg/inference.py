"""Prediction: the training preprocessing, whole-volume or Gaussian sliding-window inference on a CPU
back-end (eager fp32, bf16 autocast, ONNX Runtime), inverse preprocessing, and label files with
exactly the input's shape and affine.

Library first: :class:`Predictor` is what ``leanseg predict``, validation during training and the
benchmarks all call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanseg.config import ExperimentConfig, InferenceConfig
from leanseg.data.io import NIFTI_ENDINGS, file_ending, is_dicom_series, read_image, write_label
from leanseg.data.preprocess import Preprocessor
from leanseg.errors import LeansegError
from leanseg.fastpath import FastPath, should_compile
from leanseg.names import check_case_id, check_unique
from leanseg.nn.padding import pad_to_multiple
from leanseg.plan import Plan
from leanseg.utils import folder_lock, resolve_device, sweep_temporaries, warn_emulated_bf16, writable_folder

Net = Callable[[torch.Tensor], torch.Tensor]
BACKENDS = ("eager", "bf16", "onnx")


def predict_probabilities(
    net: Net,
    image: torch.Tensor,
    patch_size: tuple[int, int, int],
    divisor: tuple[int, int, int],
    cfg: InferenceConfig,
    sigmoid: bool = False,
) -> torch.Tensor:
    """Softmax probabilities (K, D, H, W) for one preprocessed image (C, D, H, W); per-channel sigmoid ones with
    ``sigmoid`` (region-based labels: one channel per region).

    ``mode='whole'`` runs the padded volume in one pass; ``sliding`` uses MONAI's Gaussian-weighted
    sliding windows of the training patch size; ``auto`` chooses whole when the volume is at most
    twice the patch's voxel count (one pass is then cheaper than overlapping windows).
    """
    from monai.inferers import sliding_window_inference

    x = image[None].float()
    mode = cfg.mode
    if mode == "auto":
        mode = "whole" if np.prod(x.shape[-3:]) <= 2 * np.prod(patch_size) else "sliding"
    if mode == "whole":  # at least two voxels per axis on the coarsest grid: its instance norm needs more than one
        xp, crop = pad_to_multiple(x, divisor, minimum=tuple(2 * d for d in divisor))
        logits = net(xp)[crop]
    elif mode == "sliding":
        xp, crop = pad_to_multiple(x, divisor, minimum=patch_size)
        logits = sliding_window_inference(
            xp, roi_size=patch_size, sw_batch_size=max(2, cfg.sw_batch_size), predictor=net, overlap=cfg.overlap, mode="gaussian"
        )[crop]
    else:
        raise LeansegError(f"Unknown inference mode '{mode}'; use auto, whole or sliding.")
    return torch.sigmoid(logits.float())[0] if sigmoid else torch.softmax(logits.float(), dim=1)[0]


def label_map(probs: torch.Tensor) -> torch.Tensor:
    """The most probable class per voxel of (K, D, H, W) probabilities or logits, as (D, H, W) uint8 (int64 over 256 classes).

    Equal to ``torch.argmax(probs, 0)`` (ties go to the lower class), by K - 1 element-wise passes:
    torch's argmax over a short leading dimension takes about 3.4 s for (2, 300, 300, 200) on 2 threads
    of this CPU, these passes 0.1 s.
    """
    if probs.shape[0] > 256:
        return torch.argmax(probs, 0)
    best = probs[0].clone()
    label = torch.zeros(probs.shape[1:], dtype=torch.uint8, device=probs.device)
    for k in range(1, probs.shape[0]):
        higher = probs[k] > best
        label[higher] = k
        torch.maximum(best, probs[k], out=best)
    return label


def plan_label_map(probs: torch.Tensor, plan: Plan) -> torch.Tensor:
    """The label map of a plan's probabilities: :func:`label_map`, or for regions nnU-Net's painting (each region
    over 0.5 writes its ``regions_class_order`` value, later regions over earlier ones)."""
    if not plan.regions:
        return label_map(probs)
    label = torch.zeros(probs.shape[1:], dtype=torch.uint8, device=probs.device)
    for i, value in enumerate(plan.regions_class_order or ()):
        label[probs[i] > 0.5] = value
    return label


def mirrored(net: Net) -> Net:
    """Test-time mirroring (nnU-Net): run all 8 flips of the spatial axes as one batch, average the logits."""
    import itertools

    combos = [c for r in range(4) for c in itertools.combinations((2, 3, 4), r)]

    def run(x: torch.Tensor) -> torch.Tensor:
        out = net(torch.cat([x.flip(c) if c else x for c in combos]))
        parts = out.chunk(len(combos))
        return torch.stack([p.flip(c) if c else p for p, c in zip(parts, combos)]).mean(0)

    return run


def torch_net(model: torch.nn.Module, backend: str, call: Callable[..., Any] | None = None, **call_kwargs: Any) -> Net:
    """``model`` in eval mode as a function of a batch; ``call`` runs it (a :class:`~leanseg.fastpath.FastPath`),
    else the model itself; ``call_kwargs`` go to every call (a keep mask)."""
    model.eval()
    call = call or model
    device = next(model.parameters()).device  # inputs go there, outputs come back to the CPU

    def run(x: torch.Tensor) -> torch.Tensor:
        # no_grad rather than inference_mode: MONAI's sliding window adds into buffers in place
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=backend == "bf16"):
            kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in call_kwargs.items()}
            out = call(x.to(device, non_blocking=True), **kwargs)
        return out.float().cpu()

    return run


def onnx_session(path: Path, num_threads: int) -> Callable[..., tuple[torch.Tensor, ...]]:
    """An ONNX Runtime CPU session of ``path`` as a function: tensors in (the graph's input order), its outputs out."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {n: x.detach().cpu().numpy().astype(np.float32) for n, x in zip(names, xs)}
        return tuple(torch.from_numpy(o) for o in sess.run(None, feed))

    return run


def onnx_net(model: Any, folder: Path, num_threads: int) -> Net:
    """``model``'s inference on ONNX Runtime, from the graphs ``leanseg export`` wrote into ``folder``."""
    paths = {name: Path(folder) / f"{name}.onnx" for name in model.onnx_graphs}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise LeansegError(f"No ONNX model at {missing[0]}; run `leanseg export -m RUN` first.")
    return model.onnx_forward({name: onnx_session(p, num_threads) for name, p in paths.items()})


@dataclass
class CaseResult:
    case_id: str
    output: Path | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    skipped: bool = False  # an earlier job's prediction, kept (``resume``)


def estimate_memory_bytes(image: Any, plan: Plan) -> float:
    """Rough peak bytes for one case: input and resampled copies, activations, probabilities on both grids."""
    ratio = float(np.prod(np.asarray(image.spacing) / np.asarray(plan.target_spacing)))
    voxels = float(np.prod(image.shape))
    work = voxels * max(ratio, 1.0)
    return 4 * (voxels * (plan.num_channels + plan.num_classes) + work * (2 * plan.num_channels + 2 * plan.num_classes + 8))


class Predictor:
    """Load a run folder once, then segment images.

    With a ``policy`` (AutoPath, :mod:`leanseg.dynamic`), each image runs on the path the policy
    chooses for it, and the timings report ``policy`` seconds and ``blocks_used``.

    Example:
        >>> p = Predictor.from_run("runs/hippo")            # doctest: +SKIP
        >>> label, timings = p.predict_volume(read_image(path))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        plan: Plan,
        cfg: InferenceConfig,
        onnx_dir: Path | None = None,
        policy: Any = None,
        ensemble: Sequence[tuple[torch.nn.Module, Path | None]] = (),
        source: str = "",
    ) -> None:
        self.plan = plan
        self.source = source  # the model's runs, recorded beside its predictions so that two models' never mix
        self.model = model
        self.policy = policy
        self.divisor = tuple(model.divisor)
        self.preprocessor = Preprocessor(plan)
        if cfg.backend not in BACKENDS:
            raise LeansegError(f"Unknown back-end '{cfg.backend}'; choose one of {BACKENDS}.")
        if cfg.backend == "bf16" and resolve_device(cfg.device).type == "cpu":
            warn_emulated_bf16("--backend bf16")
        if policy is not None and (cfg.backend == "onnx" or ensemble):
            raise LeansegError(
                "A policy chooses blocks per image of one model, which an ONNX graph or an ensemble cannot; pass one run and --backend eager or bf16."
            )
        if model.whole_volume:  # a two-stage model crops its own regions: sliding windows would only cut its view
            cfg = replace(cfg, mode="whole")
        self.cfg = cfg
        if any(tuple(m.divisor) != self.divisor for m, _ in ensemble):
            raise LeansegError("The ensemble's models pool their inputs differently (divisor); ensemble models of one architecture plan.")
        # the ensemble's members (nnU-Net's): each one's probabilities, averaged
        self.nets = [self._net(m, p) for m, p in [(model, onnx_dir), *ensemble]]
        self.net = self.nets[0]

    def _net(self, model: torch.nn.Module, onnx_dir: Path | None) -> Net:
        """One member's network on the configured back-end and device, mirrored where TTA is on; ``onnx_dir``: the
        folder of its exported graphs."""
        if self.cfg.backend == "onnx":
            if onnx_dir is None:
                raise LeansegError("--backend onnx needs the run folder of the exported model; pass -m RUN after `leanseg export -m RUN`.")
            net = onnx_net(model, onnx_dir, self.cfg.num_threads)
        else:
            device = resolve_device(self.cfg.device)
            model.to(device)
            compiled = should_compile(self.cfg.compile, device) and self.policy is None  # a policy's gated blocks stay eager
            net = torch_net(model, self.cfg.backend, call=FastPath(model, compiled, "inference.compile"))
        return mirrored(net) if self.cfg.tta else net

    @classmethod
    def from_run(
        cls, run_dir: Path | str | list[Path | str], policy: Path | str | None = None, path: str | None = None, **overrides: Any
    ) -> Predictor:
        """Load ``checkpoint_final.pt`` (or the latest) from a run folder; ``overrides`` set InferenceConfig fields.

        ``run_dir``: one run folder, or several (an ensemble, e.g. the 5 fold models: their probabilities averaged;
        their plans must be equal, and the first run's inference settings apply).
        ``policy``: a policy file from ``leanseg train-policy`` for this run's model (refused for another).
        ``path``: instead of a policy, one fixed path for every image ("1" keep, "0" drop, block 1 first).
        """
        from leanseg.checkpoint import load_run_model

        runs = [Path(r) for r in (run_dir if isinstance(run_dir, list) else [run_dir])]
        loaded = [load_run_model(r) for r in runs]
        model, plan, cfg = loaded[0]
        for r, (_, other, _) in zip(runs[1:], loaded[1:]):
            if other.to_dict() != plan.to_dict():
                raise LeansegError(f"{r} was planned differently from {runs[0]} (plan.json); ensemble runs of one dataset and plan.")
        pol: Any = None
        if policy is not None and path is not None:
            raise LeansegError("Pass a policy (--policy) or a fixed path (--path), not both.")
        if policy is not None:
            from leanseg.dynamic.policy import load_policy

            pol, _ = load_policy(Path(policy), model)
        if path is not None:
            from leanseg.dynamic.policy import FixedPath

            if not hasattr(model, "num_gated_blocks"):
                raise LeansegError(f"--path drops blocks of a gated model (deeplab3d_r18/r50); {runs[0]} holds a {type(model).__name__}.")
            pol = FixedPath(path, model.num_gated_blocks)
        icfg = cfg.inference
        if overrides:
            icfg = (
                ExperimentConfig(inference=icfg)
                .with_overrides({f"inference.{k}": v for k, v in overrides.items() if v is not None})
                .inference
            )
        onnx = [r if r.is_dir() else r.parent for r in runs]
        members = [(m, o) for (m, _, _), o in zip(loaded[1:], onnx[1:])]
        source = " + ".join(str(r.resolve()) for r in runs) + (
            f" with {'policy ' + str(policy) if policy else 'path ' + str(path)}" if pol else ""
        )
        return cls(model, plan, icfg, onnx_dir=onnx[0], policy=pol, ensemble=members, source=source)

    def predict_preprocessed(self, image: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Probabilities (K, D, H, W) for a preprocessed image (C, D, H, W), averaged over an ensemble's members;
        ``keep`` (N,) fixes the gated blocks run."""
        nets = self.nets
        if keep is not None:
            net = torch_net(self.model, self.cfg.backend, keep=keep)
            nets = [mirrored(net) if self.cfg.tta else net]
        probs = [
            predict_probabilities(net, image, self.plan.patch_size, self.divisor, self.cfg, sigmoid=bool(self.plan.regions))  # type: ignore[arg-type]
            for net in nets
        ]
        return probs[0] if len(probs) == 1 else torch.stack(probs).mean(0)

    def predict_volume(self, image: Any, source: Path | str = "image") -> tuple[np.ndarray, dict[str, float]]:
        """Segment a :class:`~leanseg.data.io.Volume`; returns the label map on the input grid and timings (s)."""
        probs, timings = self.predict_volume_probabilities(image, source)
        t0 = time.perf_counter()
        label = plan_label_map(probs, self.plan).numpy()
        timings["postprocess"] += time.perf_counter() - t0
        timings["total"] += time.perf_counter() - t0
        return label, timings

    def predict_volume_probabilities(self, image: Any, source: Path | str = "image") -> tuple[torch.Tensor, dict[str, float]]:
        """Class probabilities (K, *input shape) on the input grid and timings (s): what object scores and FROC need."""
        if image.array.shape[0] != self.plan.num_channels:
            raise LeansegError(
                f"{source} has {image.array.shape[0]} channel(s) but the model was trained on {self.plan.num_channels}; "
                "pass one file per channel (nnU-Net _0000, _0001...) or a 4D image."
            )
        extent = np.asarray(image.shape) * np.asarray(image.spacing)
        if (extent < 2 * np.asarray(self.plan.target_spacing)).any():
            raise LeansegError(
                f"{source} spans {' x '.join(f'{v:.3g}' for v in extent)} mm, less than two voxels of the model's "
                f"{' x '.join(f'{v:.3g}' for v in self.plan.target_spacing)} mm spacing along an axis; check the spacing in its header."
            )
        import psutil

        limit_gb = self.cfg.max_memory_gb if self.cfg.max_memory_gb is not None else psutil.virtual_memory().available / 2**30
        need = estimate_memory_bytes(image, self.plan)
        if need > limit_gb * 2**30:
            raise LeansegError(
                f"{source} ({'x'.join(map(str, image.shape))} voxels) needs about {need / 2**30:.1f} GiB, over the "
                f"{limit_gb:.3g} GiB limit; free memory, choose a coarser data.target_spacing, or raise inference.max_memory_gb."
            )
        t0 = time.perf_counter()
        d = self.preprocessor(image)
        t1 = time.perf_counter()
        x = d["image"].as_tensor()
        extra: dict[str, float] = {}
        keep = None
        if self.policy is not None:
            keep = self.policy.choose(self.model, x[None].float())[0]
            extra = {"policy": time.perf_counter() - t1, "blocks_used": float(keep.sum())}
        probs = self.predict_preprocessed(x, keep)
        t2 = time.perf_counter()
        # two-stage models (LowRes) report their stages' times and the share of the volume sent to stage two
        extra.update(self.model.last_stats)
        probs = self.preprocessor.invert(probs, d["image"])
        t3 = time.perf_counter()
        if tuple(probs.shape[1:]) != tuple(image.shape):  # guard the geometry promise
            raise RuntimeError(f"inverse preprocessing returned {tuple(probs.shape[1:])}, expected {image.shape}")
        return probs, {"preprocess": t1 - t0, "network": t2 - t1, "postprocess": t3 - t2, "total": t3 - t0, **extra}

    def predict_files(
        self,
        cases: Iterable[tuple[str, list[Path]]],
        out_dir: Path,
        progress: Callable[[Any], Any] | None = None,
        output_format: str = "auto",
        resume: bool = False,
    ) -> list[CaseResult]:
        """Segment (case_id, channel files) pairs into ``out_dir/<case_id><ending>``, each written atomically.

        ``output_format``: ``auto`` (the input's format; NIfTI for a DICOM series, on the series' grid) or ``dicom-seg``
        (a DICOM Segmentation object referencing the input series; DICOM series inputs only). ``resume``: cases whose
        prediction an earlier job wrote are skipped (nnU-Net's ``--continue_prediction``), as results with ``skipped``."""
        with self.output_folder(cases, out_dir, output_format, resume) as (targets, todo, skipped):
            results = [CaseResult(c, targets[c], 0.0, skipped=True) for c in skipped]
            for case_id, files in progress(todo) if progress else todo:
                results.append(self.predict_case(case_id, files, targets[case_id], output_format))
        return results

    def predict_case(self, case_id: str, files: list[Path], target: Path, output_format: str = "auto") -> CaseResult:
        """Read one case, segment it and write its labels atomically to ``target`` (a path :meth:`output_folder` gave)."""
        t0 = time.perf_counter()
        vol = read_image(files)
        label, timings = self.predict_volume(vol, source=files[0])
        written = self.write(target, files, label, vol, output_format)
        return CaseResult(case_id, written, time.perf_counter() - t0, timings)

    @contextmanager
    def output_folder(
        self, cases: Iterable[tuple[str, list[Path]]], out_dir: Path, output_format: str, resume: bool
    ) -> Iterator[tuple[dict[str, Path], list[tuple[str, list[Path]]], list[str]]]:
        """Check and lock ``out_dir`` for these cases (:mod:`leanseg.prediction_folder`), before any network runs;
        yields each case's target file, the cases to predict and the ids skipped under ``resume``."""
        from leanseg.prediction_folder import PredictionRecord, check_output_folder

        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise LeansegError(f"Output {out_dir} is a file; pass a folder for the predictions.")
        cases = list(cases)
        if output_format not in ("auto", "dicom-seg"):
            raise LeansegError(f"--format '{output_format}' is not one of auto, dicom-seg.")
        if output_format == "dicom-seg" and not all(is_dicom_series(files[0]) for _, files in cases):
            raise LeansegError("--format dicom-seg needs DICOM series as input (a folder of one series' slices).")
        check_output_folder(out_dir, [files[0] for _, files in cases])
        targets = {case_id: self._target(out_dir, case_id, files, output_format) for case_id, files in cases}
        check_unique(((t.name, files[0]) for t, (_, files) in zip(targets.values(), cases)), "the input")
        writable_folder(out_dir, "output", "pass an --output folder you can write to")
        with folder_lock(out_dir, "output"):
            record = PredictionRecord(out_dir, self.source)
            record.check_targets(targets)
            sweep_temporaries(out_dir)
            skipped = {c for c, _ in cases if resume and record.complete(c, targets[c])}
            todo = [(c, f) for c, f in cases if c not in skipped]
            record.claim({c: targets[c] for c, _ in todo})
            yield targets, todo, sorted(skipped)
            sweep_temporaries(out_dir)  # a worker killed mid-write (its case retried elsewhere) leaves its temporary

    @staticmethod
    def _target(out_dir: Path, case_id: str, files: list[Path], output_format: str) -> Path:
        """The file a case's labels go to: ``<case_id>.dcm`` for DICOM-SEG, else the input's format (NIfTI for DICOM)."""
        check_case_id(case_id, files[0])
        if output_format == "dicom-seg":
            return out_dir / f"{case_id}.dcm"
        ending = file_ending(files[0])
        ending = ending if ending in NIFTI_ENDINGS or ending in (".mha", ".nrrd") else ".nii.gz"
        return out_dir / f"{case_id}{ending}"

    def write(self, target: Path, files: list[Path], label: np.ndarray, vol: Any, output_format: str) -> Path:
        if output_format == "dicom-seg":
            from leanseg.data.dicom import write_dicom_seg
            from leanseg.data.io import Volume

            return write_dicom_seg(target, Volume(label, vol.affine), files[0], self.plan.labels, type(self.model).__name__)
        return write_label(target, label, vol.affine)


def collect_inputs(path: Path, num_channels: int) -> list[tuple[str, list[Path]]]:
    """Find images in a file or folder. nnU-Net ``<case>_XXXX`` channel files are grouped per case and
    every case must have all ``num_channels``; other files are one case each (3D, or 4D with channels last).
    Two inputs that would give one case (``A.nii`` and ``A.nii.gz``, ``B.nii.gz`` and ``B_0000.nii.gz``) are
    refused with both names: one would never be predicted and the other's labels would overwrite its output.
    """
    import re

    path = Path(path)
    if not path.exists():
        raise LeansegError(f"Input {path} does not exist; pass an image file or a folder of images.")
    if is_dicom_series(path):  # one scanner series: one case, named after its folder
        return [(check_case_id(path.resolve().name, path), [path])]
    endings = NIFTI_ENDINGS + (".mha", ".mhd", ".nrrd")
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and file_ending(p) in endings)
    files = [f for f in files if not f.name.startswith(".")]  # hidden files (a killed write's temporary) are no input
    if not files:
        raise LeansegError(f"No images (.nii.gz, .nii, .mha, .mhd, .nrrd) in {path}; pass a folder that holds them.")
    channel_files: dict[str, dict[int, Path]] = {}
    single: list[tuple[str, Path]] = []
    for f in files:
        stem = f.name[: -len(file_ending(f))]
        m = re.match(r"^(.*)_(\d{4})$", stem)
        if m and (path.is_dir() or num_channels > 1):
            chans = channel_files.setdefault(m.group(1), {})
            if int(m.group(2)) in chans:
                check_unique([(stem, chans[int(m.group(2))]), (stem, f)], path)
            chans[int(m.group(2))] = f
        else:
            single.append((stem, f))
    check_unique([*single, *((cid, chans[min(chans)]) for cid, chans in channel_files.items())], path)
    out = [(check_case_id(cid, f), [f]) for cid, f in single]
    for cid, chans in channel_files.items():
        missing = [c for c in range(num_channels) if c not in chans]
        if missing:
            raise LeansegError(
                f"Channel {missing[0]:04d} of case '{cid}' is missing in {path}; add {cid}_{missing[0]:04d} next to the others."
            )
        out.append((check_case_id(cid, chans[0]), [chans[c] for c in range(num_channels)]))
    return sorted(out)
