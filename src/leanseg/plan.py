"""The plan: defaults chosen from a dataset fingerprint, after nnU-Net (Isensee et al., Nature Methods 2021).

The plan turns a :class:`~leanseg.data.fingerprint.Fingerprint` into defaults that fit the data and a
2-core CPU: target spacing, patch size, pooling strides, feature widths and the normalisation scheme
(z-score per channel for MRI, a clipped Hounsfield window scaled to [0, 1] for CT). Models, checkpoints
and inference depend on this module, not on the data package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from leanseg.config import DataConfig, ModelConfig
from leanseg.errors import LeansegError

if TYPE_CHECKING:
    from leanseg.data.fingerprint import Fingerprint

# A CPU-sized cap on training patches: 64^3 voxels trains at a few steps per second on 2 cores.
MAX_PATCH_VOXELS = 64**3
MIN_FEATURE_SIZE = 4  # coarsest feature map edge, in voxels
MAX_STAGES = 5
ANISOTROPY_RATIO = 3.0


@dataclass(frozen=True)
class Plan:
    """Defaults chosen from a fingerprint; every field can be overridden in the config."""

    target_spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    strides: tuple[tuple[int, int, int], ...]
    features: tuple[int, ...]
    normalization: tuple[str, ...]  # per channel: one of SCHEMES
    ct_window: tuple[tuple[float, float] | None, ...]  # per channel: the clip window of a "ct" channel, else None
    median_shape: tuple[int, int, int]
    orientation: str
    crop_foreground: bool
    num_channels: int
    num_classes: int
    labels: dict[int, str]
    ignore_label: int | None = None  # label value left out of loss and metrics (nnU-Net's "ignore")
    regions: tuple[tuple[int, ...], ...] | None = None  # region-based labels: class i's label values; sigmoid outputs
    regions_class_order: tuple[int, ...] | None = None  # the value painted for each region, in order

    @property
    def num_outputs(self) -> int:
        """The network's output channels: one per region (sigmoid), or one per class with background (softmax)."""
        return len(self.regions) if self.regions else self.num_classes

    @property
    def label_values(self) -> list[int]:
        """The values a label map holds, background included (not the ignore value)."""
        return sorted({v for r in self.regions for v in r} | {0}) if self.regions else sorted(self.labels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = {str(k): v for k, v in self.labels.items()}
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: Any = "the plan") -> Plan:
        """A plan from its JSON form; a missing, unknown or malformed entry is one sentence naming ``source``."""
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls)}
        optional = {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        unknown = sorted(set(d) - names) if isinstance(d, dict) else []
        missing = sorted(names - optional - set(d)) if isinstance(d, dict) else []
        if not isinstance(d, dict) or unknown or missing:
            what = f"unknown {unknown}" if unknown else f"missing {missing}" if missing else "not a mapping"
            raise LeansegError(f"{source} is damaged ({what}); retrain into a new --out or restore the run's plan.json.")
        try:
            plan = cls._parse(dict(d))
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise LeansegError(
                f"{source} is damaged ({type(e).__name__}: {e}); retrain into a new --out or restore the run's plan.json."
            ) from None
        bad = [n for n in plan.normalization if n not in SCHEMES]
        if bad or len(plan.normalization) != plan.num_channels:
            raise LeansegError(
                f"{source} names normalisation {list(plan.normalization)}, but each of its {plan.num_channels} channel(s) needs one "
                f"of {', '.join(SCHEMES)}; restore the run's plan.json."
            )
        return plan

    @classmethod
    def _parse(cls, d: dict[str, Any]) -> Plan:
        d["target_spacing"] = tuple(d["target_spacing"])
        d["patch_size"] = tuple(d["patch_size"])
        d["strides"] = tuple(tuple(s) for s in d["strides"])
        d["features"] = tuple(d["features"])
        channels = int(d["num_channels"])
        if isinstance(d["normalization"], str):  # plans written before normalisation was per channel: one scheme for all
            window = tuple(d["ct_window"]) if d.get("ct_window") else None
            d["normalization"], d["ct_window"] = (d["normalization"],) * channels, (window,) * channels
        d["normalization"] = tuple(d["normalization"])
        d["ct_window"] = tuple(tuple(w) if w else None for w in d["ct_window"])
        d["median_shape"] = tuple(d["median_shape"])
        d["labels"] = {int(k): v for k, v in d["labels"].items()}
        if d.get("regions"):
            d["regions"] = tuple(tuple(r) for r in d["regions"])
            d["regions_class_order"] = tuple(d["regions_class_order"])
        return cls(**d)

    def key(self) -> str:
        """Hash of everything that changes the preprocessed arrays (used to name the cache)."""
        keep = {k: self.to_dict()[k] for k in ("target_spacing", "normalization", "ct_window", "orientation", "crop_foreground")}
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


# leanseg's normalisation schemes, and the names nnU-Net v2 gives the same ones in dataset.json's channel_names
SCHEMES = ("zscore", "ct", "none", "rescale_to_0_1", "rgb_to_0_1")
NNUNET_NAMES = {"ct": "ct", "nonorm": "none", "zscore": "zscore", "rescale_to_0_1": "rescale_to_0_1", "rgb_to_0_1": "rgb_to_0_1"}


def channel_schemes(setting: str, fp: Fingerprint) -> tuple[str, ...]:
    """Each channel's normalisation: by its ``channel_names`` entry as nnU-Net maps it (CT -> ct, noNorm -> none,
    rescale_to_0_1, rgb_to_0_1, anything else zscore) for ``auto``; else one scheme for all, or one per channel
    (``"zscore,ct"``)."""
    names = fp.channel_names or ["CT" if fp.modality == "CT" else "MRI"] * fp.num_channels
    if setting == "auto":
        return tuple(NNUNET_NAMES.get(n.casefold(), "zscore") for n in names)
    given = [NNUNET_NAMES.get(x.strip().casefold(), x.strip()) for x in setting.split(",")]
    if len(given) == 1:
        given = given * fp.num_channels
    bad = [x for x in given if x not in SCHEMES]
    if bad or len(given) != fp.num_channels:
        raise LeansegError(
            f"data.normalization '{setting}' must be auto, one of {', '.join(SCHEMES)} (or nnU-Net's noNorm), "
            f"or one of those per channel ({fp.num_channels} here), comma-separated."
        )
    return tuple(given)


def _fit_to_strides(patch: np.ndarray, divisor: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Round each edge up to a multiple of the network's divisor, then, while that puts the patch over
    MAX_PATCH_VOXELS, take one divisor step off the edge longest in millimetres: the cap holds after rounding."""
    patch = (np.ceil(patch / divisor) * divisor).astype(int)
    while np.prod(patch) > MAX_PATCH_VOXELS:
        shrinkable = patch > divisor
        if not shrinkable.any():
            break
        ax = int(np.argmax(np.where(shrinkable, patch * spacing, -1.0)))
        patch[ax] -= divisor[ax]
    return patch


def plan_from_fingerprint(fp: Fingerprint, data: DataConfig, model: ModelConfig) -> Plan:
    spacings = np.asarray(fp.spacings)
    target = np.median(spacings, axis=0)
    if data.target_spacing is not None:
        target = np.asarray(data.target_spacing, dtype=float)
    elif target.max() / target.min() > ANISOTROPY_RATIO and len(spacings) > 1:
        # nnU-Net: for anisotropic data, take the 10th percentile along the coarse axis so that
        # resampling does not blur the in-plane resolution into the coarse one.
        ax = int(np.argmax(target))
        target[ax] = max(np.percentile(spacings[:, ax], 10), target[np.arange(3) != ax].max())
    shapes_mm = np.asarray(fp.shapes) * spacings
    median_shape = np.round(np.median(shapes_mm / target[None], axis=0)).astype(int)

    if data.patch_size is not None:
        patch = np.asarray(data.patch_size, dtype=int)
    else:
        patch = median_shape.astype(float)
        while np.prod(patch) > MAX_PATCH_VOXELS:  # shrink the longest side (in mm) first, like nnU-Net
            ax = int(np.argmax(patch * target))
            patch[ax] = max(patch[ax] * 0.9, MIN_FEATURE_SIZE)
        patch = np.maximum(np.round(patch), MIN_FEATURE_SIZE).astype(int)

    if model.strides is not None:
        strides = [tuple(int(v) for v in s) for s in model.strides]
    else:
        strides = [(1, 1, 1)]
        while len(strides) < MAX_STAGES:
            # Pool an axis only while its coarsest feature map (patch rounded up) stays >= MIN_FEATURE_SIZE
            # and its spacing is not much coarser than the finest one (keeps anisotropic z at stride 1 early on).
            divisor = np.prod(np.asarray(strides), axis=0)
            size, spacing = np.ceil(patch / divisor), target * divisor
            s = tuple(2 if size[i] / 2 >= MIN_FEATURE_SIZE and spacing[i] <= 2 * spacing.min() else 1 for i in range(3))
            if s == (1, 1, 1):
                break
            strides.append(s)  # type: ignore[arg-type]
    if data.patch_size is None:
        patch = _fit_to_strides(patch, np.prod(np.asarray(strides), axis=0), target)
    features = model.features or tuple(min(model.base_features * 2**i, model.max_features) for i in range(len(strides)))
    if len(features) != len(strides):
        raise LeansegError(f"model.features has {len(features)} entries but there are {len(strides)} stages; give one width per stage.")

    norm = channel_schemes(data.normalization, fp)
    ct_window = tuple((fp.intensity[c]["p00_5"], fp.intensity[c]["p99_5"]) if n == "ct" else None for c, n in enumerate(norm))
    return Plan(
        target_spacing=tuple(float(v) for v in target),  # type: ignore[arg-type]
        patch_size=tuple(int(v) for v in patch),  # type: ignore[arg-type]
        strides=tuple(strides),  # type: ignore[arg-type]
        features=tuple(int(f) for f in features),
        normalization=norm,
        ct_window=ct_window,
        median_shape=tuple(int(v) for v in median_shape),  # type: ignore[arg-type]
        orientation=data.orientation,
        crop_foreground=data.crop_foreground,
        num_channels=fp.num_channels,
        num_classes=max(fp.labels) + 1,
        labels=dict(fp.labels),
        ignore_label=fp.ignore_label,
        regions=tuple(tuple(r) for r in fp.regions) if fp.regions else None,
        regions_class_order=tuple(fp.regions_class_order) if fp.regions_class_order else None,
    )
