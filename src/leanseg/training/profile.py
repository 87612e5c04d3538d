"""Where a training step's time goes: data, forward, loss, backward and optimiser, timed on a real loader."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from leanseg.config import ExperimentConfig
from leanseg.training.trainer import GRAD_CLIP_NORM, Trainer


def profile_training_step(
    data_dir: Path, cfg: ExperimentConfig, steps: int = 10, warmup: int = 3, channels_last: bool = False
) -> dict[str, float]:
    """Mean seconds per step of each part over ``steps`` steps after ``warmup``, with the run's loader, model, loss
    and autocast; ``total`` is their sum, ``parameters`` the model's count, ``convolution_share`` the step's time in
    convolutions by resolution (:func:`convolution_share_by_resolution`), ``batch_cpu_seconds`` the cost of making
    one batch (:func:`_batch_cpu_seconds`). ``channels_last``: weights and batches in torch's channels-last 3D
    memory format. The run folder is a temporary one."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Trainer(cfg, data_dir, Path(tmp) / "run", show_progress=False, resume=False)
        t.initialize()
        t.model.train()
        layout = torch.channels_last_3d if channels_last else torch.contiguous_format
        t.model.to(memory_format=layout)
        batches = iter(t.build_loader())
        parts = {"data": 0.0, "forward": 0.0, "loss": 0.0, "backward": 0.0, "optimizer": 0.0}
        for i in range(warmup + steps):
            times = _timed_step(t, batches, layout)
            if i >= warmup:
                parts = {k: parts[k] + times[k] / steps for k in parts}
        convolutions = convolution_share_by_resolution(t, next(batches))
        count = float(sum(p.numel() for p in t.model.parameters()))
        return {
            **parts,
            "total": sum(parts.values()),
            "parameters": count,
            "convolution_share": convolutions,
            "batch_cpu_seconds": _batch_cpu_seconds(t, steps),
        }


def _batch_cpu_seconds(t: Trainer, batches: int) -> float:
    """Seconds to sample and augment one batch in this process: the CPU time the loader's workers take from the
    training threads on a machine with no spare core (``data`` above is only the wait for a prefetched batch)."""
    t.cfg = replace(t.cfg, train=replace(t.cfg.train, num_workers=0))
    loader = iter(t.build_loader())
    next(loader)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return (time.perf_counter() - t0) / batches


def _timed_step(t: Trainer, batches: object, layout: torch.memory_format) -> dict[str, float]:
    """One step as :meth:`Trainer.train_step` takes it (CPU), with a clock between its parts."""
    t0 = time.perf_counter()
    batch = next(batches)  # type: ignore[call-overload]
    x, y = batch["image"].to(t.device, memory_format=layout), batch["label"].float().to(t.device)
    t1 = time.perf_counter()
    with t._autocast():
        output = t.forward(x)
    t2 = time.perf_counter()
    loss = t.compute_loss(output, y)
    t3 = time.perf_counter()
    t.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    t4 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(t.model.parameters(), GRAD_CLIP_NORM)
    t.optimizer.step()
    t5 = time.perf_counter()
    return {"data": t1 - t0, "forward": t2 - t1, "loss": t3 - t2, "backward": t4 - t3, "optimizer": t5 - t4}


def convolution_share_by_resolution(t: Trainer, batch: dict, steps: int = 3) -> dict[str, float]:
    """Share of a training step's CPU time spent in 3D convolutions (forward and backward), by the spatial size of
    their first input (``"40x56x40"``...: the input forward, the output gradient backward), from torch's profiler;
    ``other`` is everything else."""
    from torch.profiler import ProfilerActivity, profile

    x, y = batch["image"].to(t.device), batch["label"].float().to(t.device)

    def step() -> None:
        with t._autocast():
            out = t.forward(x)
        t.optimizer.zero_grad(set_to_none=True)
        t.compute_loss(out, y).backward()

    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        if e.key in ("aten::mkldnn_convolution", "aten::convolution_backward") and e.input_shapes and len(e.input_shapes[0]) == 5:
            size = "x".join(map(str, e.input_shapes[0][2:]))
            shares[size] = shares.get(size, 0.0) + e.self_cpu_time_total / total
    shares["other"] = 1 - sum(shares.values())
    return shares
