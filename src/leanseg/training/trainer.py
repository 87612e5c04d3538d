"""The Trainer: one training run split into small overridable steps, after nnU-Net's ``nnUNetTrainer``.

:meth:`Trainer.fit` runs :meth:`~Trainer.initialize` (data, plan, run folder, model, optimiser, loss, resume),
then :meth:`~Trainer.train_step` until the schedule ends, with :meth:`~Trainer.validation_step` and
:meth:`~Trainer.on_checkpoint` on their cadence. A method that needs another objective or step overrides one
hook (``build_loss``, ``forward``, ``compute_loss``, ``train_step``...) and never copies the loop: the NAS
supernet trainer (:class:`leanseg.search.nas.SupernetTrainer`) overrides ``forward`` and ``build_loss``.

The recipe: Dice + cross-entropy (MONAI ``DiceCELoss``, with ``DeepSupervisionLoss`` for deep supervision),
SGD with Nesterov momentum or Adam, a poly or cosine schedule over iterations *or* a wall-clock budget
(whichever runs out first sets the schedule's progress), bf16 autocast where the CPU is fast at it, gradients
clipped at norm 12, validation Dice during training, atomic checkpoints and resume, a progress bar, and the
run folder of :class:`~leanseg.runfolder.RunFolder`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from leanseg.config import ExperimentConfig
from leanseg.errors import LeansegError
from leanseg.fastpath import FastPath, should_compile
from leanseg.runfolder import RunFolder
from leanseg.training.distributed import (
    Rank,
    barrier,
    join_group,
    launch,
    leave_group,
    local_batch,
    mean_and_max,
    patch_indices,
    rank_device,
)
from leanseg.training.schedule import lr_at, make_optimizer, use_bf16
from leanseg.utils import folder_lock, progress_bar, resolve_device, seed_everything, set_threads, sweep_temporaries

GRAD_CLIP_NORM = 12.0  # nnU-Net's


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    seconds: float
    val: dict[str, float]
    data_wait_share: float
    already_complete: bool = False  # the run folder held a finished run, left as it was
    ended_by: str = "iterations"  # budget (the clock) or iterations

    @classmethod
    def from_summary(cls, run: RunFolder, already_complete: bool = False) -> TrainResult:
        """A finished run's figures from its ``summary.json``."""
        s = run.summary()
        val = {k: v for k, v in s.items() if k.startswith("val_dice")}
        ended = s.get("ended_by", "iterations")
        return cls(run.path, int(s["iterations"]), float(s["train_seconds"]), val, float(s["data_wait_share"]), already_complete, ended)


class Trainer:
    """Trains ``cfg`` on a dataset folder into a run folder; re-running on the same folder resumes.

    The step hooks (:meth:`forward`, :meth:`compute_loss`, :meth:`train_step`) need only ``model``,
    ``optimizer``, ``loss_fn`` and ``bf16``, so a caller that builds those itself (the NAS search) can use the
    step without the run: see :meth:`for_step`.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        data_dir: Path | str | None = None,
        out_dir: Path | str | None = None,
        cache_root: Path | None = None,
        show_progress: bool = True,
        resume: bool = True,
    ) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.run = RunFolder(out_dir) if out_dir is not None else None
        self.cache_root, self.show_progress, self.resume = cache_root, show_progress, resume
        self.device = torch.device("cpu")  # set from train.device when the model is built
        self.bf16 = use_bf16(cfg.train)
        self.scaler: Any = None  # CUDA AMP's gradient scaler, where the step runs in float16
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.val: dict[str, float] = {}
        self.rank = Rank()  # this process's place in a data-parallel group (rank 0 of 1 alone)
        self.ddp: Any = None  # the model wrapped in DistributedDataParallel where the group has several ranks
        self.net: Any = None  # the model (or DDP) on the CPU's fast path (leanseg.fastpath), once initialised
        self._agreed = 0.0  # the ranks' agreed progress after the last step (several ranks only)

    @classmethod
    def for_step(cls, cfg: ExperimentConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, plan: Any = None) -> Trainer:
        """A trainer holding only what :meth:`train_step` needs (model, optimiser, loss, bf16): no data, no run folder.
        ``plan`` (optional) gives the loss the dataset's ignore label."""
        t = cls(cfg)
        if plan is not None:
            t.plan = plan
        t.model, t.optimizer, t.loss_fn = model, optimizer, t.build_loss()
        t._place(next(model.parameters()).device)
        return t

    # --- set-up -------------------------------------------------------------------------------------------
    def initialize(self) -> None:
        """Data, plan and splits; the run folder's set-up files; model, optimiser, loss; resume or fine-tune start."""
        from leanseg.data.prepare import prepare_data, run_splits
        from leanseg.models.factory import check_settings

        if self.run is None or self.data_dir is None:
            raise LeansegError("Trainer.initialize needs a dataset folder and a run folder.")
        if self.run.path.exists() and not self.run.path.is_dir():
            raise LeansegError(f"Output {self.run.path} is a file; pass a folder for the run.")
        check_settings(self.cfg.model)
        set_threads(self.rank.threads(self.cfg.train.num_threads))
        seed_everything(self.cfg.train.seed + self.rank.rank)
        if not self.rank.is_main:
            barrier(self.rank)  # rank 0 prepares the cache and the run folder first; the others then read them
        self.prep = prepare_data(
            self.data_dir, self.cfg, self.cache_root, progress_bar("fingerprint / preprocess") if self._shows_progress() else None
        )
        self.plan = self.prep.plan
        splits, self.split = run_splits([c.case_id for c in self.prep.dataset.cases], self.cfg.data)
        if self.rank.is_main:
            self._set_up_run_folder(splits)
            barrier(self.rank)
        self.model = self.build_model()
        self._place(rank_device(resolve_device(self.cfg.train.device), self.rank))
        self.optimizer = self.configure_optimizer()
        self.elapsed_before = 0.0
        self._load_start_weights()
        t = self.cfg.train
        measured = self.model if self.rank.world == 1 else None  # unset, a data-parallel run stays eager (not measured)
        compiled = should_compile(t.compile, self.device, t.iteration_limit, t.budget_minutes, measured)
        self.model.to(memory_format=FastPath.layout_of(compiled))  # before DDP, which records the gradients' layout
        if self.rank.world > 1:  # DDP broadcasts rank 0's weights, then averages every gradient over the ranks
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.net = FastPath(self.ddp or self.model, compiled, "train.compile", owner=self.model)
        self.loss_fn = self.build_loss()
        val = self.split["val"]
        self.val_ids = val[: self.cfg.train.val_max_cases] if self.cfg.train.val_max_cases else val

    def _set_up_run_folder(self, splits: list[Any]) -> None:
        """Rank 0: the run folder, refused for another config or other data before anything is written there."""
        assert self.run is not None
        self.run.create()
        self._check_resumable_config()
        self._check_same_data()
        if not (self.resume and self.run.latest.is_file()):  # a run that resumes (or is complete) keeps its set-up files
            self.run.write_setup(self.cfg, self.plan, self.prep.fingerprint.to_dict(), splits, self.data_dir)
        sweep_temporaries(self.run.path)  # accepted: what a killed write left can go

    def _shows_progress(self) -> bool:
        return self.show_progress and self.rank.is_main

    def _check_resumable_config(self) -> None:
        run = self.run
        assert run is not None
        if run.config_path.is_file() and self.resume and run.latest.is_file() and run.config().to_dict() != self.cfg.to_dict():
            raise LeansegError(
                f"{run.path} holds a run with another config ({run.config_path}); pass a new --out or the same settings to resume."
            )

    def _check_same_data(self) -> None:
        """A run with a checkpoint trains on its own data only: a dataset whose fingerprint differs from the run's
        ``fingerprint.json`` (cases, shapes, spacings, labels, intensities...; its name and notes aside) is refused
        before anything is written."""
        run = self.run
        assert run is not None
        recorded = run.path / "fingerprint.json"
        if not (self.resume and run.latest.is_file() and recorded.is_file()):
            return
        old, new = json.loads(recorded.read_text()), json.loads(json.dumps(self.prep.fingerprint.to_dict()))
        differ = sorted(k for k in old.keys() | new.keys() if k not in ("dataset", "notes") and old.get(k) != new.get(k))
        if differ:
            raise LeansegError(
                f"{run.path} was trained on other data than {self.data_dir} (its {', '.join(differ)} differ from the run's "
                "fingerprint.json); pass a new --out to train on this dataset, or the run's own --data to resume it."
            )

    def _load_start_weights(self) -> None:
        """``train.init_checkpoint`` (fine-tuning), then the run's own latest checkpoint where it resumes."""
        from leanseg.checkpoint import load_checkpoint, load_pretrained, load_weights

        if self.cfg.train.init_checkpoint:
            init_path = Path(self.cfg.train.init_checkpoint)
            load_pretrained(self.model, load_checkpoint(init_path), init_path)
        latest = self.run.latest  # type: ignore[union-attr]
        if self.resume and latest.is_file():
            ckpt = load_checkpoint(latest)
            load_weights(self.model, ckpt, self.cfg, self.plan, latest)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.iteration, self.elapsed_before = int(ckpt["iteration"]), float(ckpt["elapsed"])
            self.history = json.loads(ckpt.get("history", "[]"))

    def _place(self, device: torch.device) -> None:
        """Put the model on ``device``; on CUDA the step runs with float16 autocast and a gradient scaler (``train.amp``)."""
        self.device = device
        self.model.to(device)
        if device.type == "cuda":
            self.bf16 = False
            self.scaler = torch.amp.GradScaler("cuda", enabled=self.cfg.train.amp)

    def build_model(self) -> torch.nn.Module:
        from leanseg.models import build_model

        return build_model(self.cfg.model, self.plan)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.model.parameters(), self.cfg.train)

    def build_loss(self) -> Any:
        from leanseg.training.losses import deep_supervision_loss

        plan = getattr(self, "plan", None)  # a trainer made for one step (for_step) has no dataset, so no ignore label
        return deep_supervision_loss(plan.ignore_label, plan.regions) if plan is not None else deep_supervision_loss()

    def build_loader(self) -> Any:
        """Batches of foreground-oversampled, augmented patches; item i is patch i of the whole run, so resuming
        at iteration k reads from k * batch. Of a data-parallel group's global batch, each rank reads its own slice."""
        from leanseg.data.sampling import PatchDataset

        t = self.cfg.train
        ds = PatchDataset(
            self.prep.cache_dir,
            self.split["train"],
            self.plan.patch_size,
            self.cfg.augment,
            self.cfg.data.foreground_oversample,
            seed=t.seed,
        )
        return torch.utils.data.DataLoader(
            ds,
            batch_size=local_batch(t.batch_size, self.rank),
            sampler=patch_indices(self.iteration, t.batch_size, self.rank),  # type: ignore[arg-type]
            num_workers=t.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=t.num_workers > 0,
            prefetch_factor=4 if t.num_workers > 0 else None,
        )

    # --- the step -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Any:
        return (self.net or self.ddp or self.model)(x)

    def compute_loss(self, output: Any, y: torch.Tensor) -> torch.Tensor:
        """Dice + CE (plus a model's ``aux_loss``), or the model's own objective where it has one (LowRes)."""
        if self.model.has_own_loss:
            return self.model.training_loss(output, y)
        logits, aux = (output["logits"], output["aux_loss"]) if isinstance(output, dict) else (output, 0.0)
        return self.loss_fn(logits, y) + aux

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a batch (B, C, D, H, W) and its labels (B, 1, D, H, W, float); returns the loss."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with self._autocast():
            output = self.forward(x)
        loss = self.compute_loss(output, y)
        if not torch.isfinite(loss):
            raise LeansegError(
                f"The training loss became {loss.item()} at iteration {self.iteration}; lower train.lr (now {self.cfg.train.lr})."
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP_NORM)
            self.optimizer.step()
        else:  # CUDA AMP: unscale before clipping, as torch's recipe says
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP_NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss

    def _autocast(self) -> Any:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16, enabled=self.cfg.train.amp)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def validation_step(self) -> dict[str, float]:
        from leanseg.training.validation import validate

        # eager and NCDHW, as before: whole volumes differ in shape (the compiled graph is the patch's), and rank 0
        # validates alone, never through DDP's collectives
        with self.net.eager():
            return validate(self.model, self.prep.cache_dir, self.val_ids, self.plan, self.cfg, self.bf16)

    def on_checkpoint(self, path: Path) -> None:
        from leanseg.checkpoint import save_checkpoint

        save_checkpoint(
            path,
            self.model,
            self.cfg,
            self.plan,
            optimizer=self.optimizer.state_dict(),
            iteration=self.iteration,
            elapsed=self.elapsed(),
            history=json.dumps(self.history),
        )

    # --- the loop -----------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._t_start

    def progress(self) -> float:
        """The schedule's progress: iterations done, or the wall-clock budget spent, whichever is further; in a
        data-parallel group, what the ranks agreed on after the last step (so that a clock ends them together)."""
        return self._agreed if self.rank.world > 1 else self._local_progress()

    def _local_progress(self) -> float:
        return max(self._progress_parts().values())

    def _progress_parts(self) -> dict[str, float]:
        """Progress by what can end the run: ``iterations`` (where a limit is set) and ``budget`` (where one is)."""
        t, parts = self.cfg.train, {}
        if t.iteration_limit is not None:
            parts["iterations"] = self.iteration / t.iteration_limit
        if t.budget_minutes:
            parts["budget"] = self.elapsed() / (t.budget_minutes * 60)
        return parts

    def ended_by(self) -> str:
        """What ended the run: ``budget`` (the clock) or ``iterations``."""
        parts = self._progress_parts()
        return max(parts, key=parts.__getitem__)

    def fit(self) -> TrainResult:
        """Initialise, train until :meth:`progress` reaches 1, write the final checkpoint and ``summary.json``.

        The run folder is locked while it runs: a second writer is refused with a sentence."""
        if self.run is None:
            raise LeansegError("Trainer.fit needs a dataset folder and a run folder.")
        self.rank = join_group(resolve_device(self.cfg.train.device))
        if not self.rank.is_main:  # rank 0 alone holds the lock and writes the run folder
            result = self._fit()
        else:
            with folder_lock(self.run.path, "run"):
                result = self._fit()
        barrier(self.rank)  # the ranks leave together, once rank 0 has written the final checkpoint and summary
        return result

    def _fit(self) -> TrainResult:
        self.initialize()
        self.model.train()
        self._wait_s = self._step_s = 0.0
        self._t_start = time.perf_counter()
        _, self._agreed = mean_and_max(0.0, self._local_progress(), self.rank, self.device)
        if self._is_complete():
            return self._complete_result()
        with self._progress_bar() as (bar, task):
            batches, running = iter(self.build_loader()), None
            while self.progress() < 1.0:
                lr = lr_at(self.cfg.train.lr, self.cfg.train.schedule, self.progress())
                self.set_lr(lr)
                t0 = time.perf_counter()
                batch = next(batches)
                t1 = time.perf_counter()
                loss = self.train_step(batch["image"], batch["label"].float()).item()  # float: DeepSupervisionLoss resizes it
                self.iteration += 1
                loss, self._agreed = mean_and_max(loss, self._local_progress(), self.rank, self.device)
                t2 = time.perf_counter()
                self._wait_s, self._step_s = self._wait_s + t1 - t0, self._step_s + t2 - t0
                running = loss if running is None else 0.95 * running + 0.05 * loss
                self._after_step(
                    {"iteration": self.iteration, "seconds": round(self.elapsed_before + t2 - self._t_start, 2), "lr": lr, "loss": loss}
                )
                info = f"it {self.iteration} loss {running:.3f} lr {lr:.2e}" + (f" val Dice {self.val['val_dice']:.3f}" if self.val else "")
                bar.update(task, completed=min(self.progress(), 1.0), info=info)
        return self._finish()

    def _is_complete(self) -> bool:
        """A resumed run that already reached its end and wrote its final checkpoint and summary."""
        run = self.run
        assert run is not None
        return self.resume and self.progress() >= 1.0 and run.final.is_file() and (run.path / "summary.json").is_file()

    def _complete_result(self) -> TrainResult:
        """The finished run's figures from its summary; nothing is trained or written."""
        return TrainResult.from_summary(self.run, already_complete=True)  # type: ignore[arg-type]

    def _after_step(self, row: dict[str, Any]) -> None:
        """Validation and checkpoint on their cadence (and at the end); every 10th row kept for metrics.csv."""
        from leanseg.training.history import write_history

        if not self.rank.is_main:  # rank 0 validates and writes; the others go on to the next step
            return
        t, done = self.cfg.train, self.progress() >= 1.0
        if self.iteration % t.val_every == 0 or done:
            self.val = self.validation_step()
            row.update(self.val)
        if self.iteration % t.checkpoint_every == 0 or done:
            row["data_wait_share"] = self._wait_s / max(self._step_s, 1e-9)
            self.history.append(row)
            self.on_checkpoint(self.run.latest)  # type: ignore[union-attr]
            write_history(self.run.path, self.history)  # type: ignore[union-attr]
        elif "val_dice" in row or self.iteration % 10 == 0:
            self.history.append(row)

    def _finish(self) -> TrainResult:
        from leanseg.training.history import write_history

        run = self.run
        assert run is not None
        seconds = self.elapsed()
        share = self._wait_s / max(self._step_s, 1e-9)
        if not self.rank.is_main:
            return TrainResult(run.path, self.iteration, seconds, {}, share, ended_by=self.ended_by())
        self.on_checkpoint(run.final)
        write_history(run.path, self.history)
        summary = {
            "iterations": self.iteration,
            "train_seconds": seconds,
            "data_wait_share": share,
            "ended_by": self.ended_by(),
            "fold": self.cfg.data.fold,
            "train_cases": len(self.split["train"]),
            "val_cases": len(self.val_ids),
            **self.val,
        }
        run.write_summary(summary)
        return TrainResult(run.path, self.iteration, seconds, self.val, share, ended_by=summary["ended_by"])

    @contextmanager
    def _progress_bar(self) -> Iterator[tuple[Any, Any]]:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        columns = [
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        with Progress(*columns, disable=not self._shows_progress(), transient=False) as p:
            yield p, p.add_task("train", total=1.0, info="")


def train(
    data_dir: Path | str,
    out_dir: Path | str,
    cfg: ExperimentConfig | None = None,
    fold: int | str | None = None,
    cache_root: Path | None = None,
    show_progress: bool = True,
    resume: bool = True,
    trainer: type[Trainer] = Trainer,
    nproc: int = 1,
) -> TrainResult:
    """Train a segmentation model on fold ``fold`` of a dataset folder, into run folder ``out_dir``.

    Re-running on an existing run folder resumes from ``checkpoint_latest.pt`` (same config required).
    Returns the final validation Dice and the share of step time spent waiting on data. ``trainer`` is the
    :class:`Trainer` (sub)class to run. ``nproc`` > 1: that many data-parallel processes on this machine
    (:mod:`leanseg.training.distributed`), sharing its ``train.num_threads`` and the global ``train.batch_size``; a
    run resumes with any number of processes (its config does not record them).
    """
    cfg = cfg or ExperimentConfig()
    if fold is not None:
        cfg = replace(cfg, data=replace(cfg.data, fold=fold))
    if nproc < 1:
        raise LeansegError(f"--nproc is {nproc}; use 1 (one process) or more (data-parallel processes).")
    if nproc == 1:  # one process, or one of a torchrun launch's (its fit joins the group the environment names)
        try:
            return trainer(cfg, data_dir, out_dir, cache_root, show_progress, resume).fit()
        finally:
            leave_group()
    local_batch(cfg.train.batch_size, Rank(0, nproc))  # refused here, before any process starts
    launch(nproc, _fit_rank, trainer, cfg, data_dir, out_dir, cache_root, show_progress, resume, run_dir=Path(out_dir))
    return TrainResult.from_summary(RunFolder(out_dir))


def _fit_rank(trainer: type[Trainer], *args: Any) -> None:
    """One process of a data-parallel run (``torch.multiprocessing`` calls it by name)."""
    trainer(*args).fit()
