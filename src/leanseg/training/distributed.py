"""Data-parallel training with PyTorch DistributedDataParallel, as nnU-Net's ``-num_gpus`` does it.

``leanseg train --nproc N`` starts N processes on this machine (``torch.multiprocessing.spawn``); several machines
run the same ``leanseg train`` under ``torchrun``, which sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``. Either way
each process joins one group (gloo on CPUs, NCCL on GPUs) and:

* ``train.batch_size`` is the global batch: each of the W ranks takes ``batch_size / W`` patches a step. The
  patch stream is one pure function of (seed, index) (:mod:`leanseg.data.sampling`), and rank r takes the r-th
  slice of every global batch, so each rank samples patches of its own and together they draw exactly the patches
  a single process would. Gradients are averaged by DDP; the logged loss is the ranks' mean.
* ``train.num_threads`` counts a machine's threads: its processes share them (``--nproc 2`` on 2 threads: 1 each).
* Rank 0 alone holds the run folder's lock and writes its set-up files, checkpoints, history, curve and summary,
  and validates; the others read the cache rank 0 prepared. A checkpoint holds the plain model's weights, so a
  run resumes (and predicts) the same whatever the number of processes that wrote it.
* The ranks agree each step on the schedule's progress (the largest), so a clock budget ends them together.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from leanseg.errors import LeansegError


@dataclass(frozen=True)
class Rank:
    """This process's place in the group: ``rank`` of ``world`` processes (0 of 1 without a group)."""

    rank: int = 0
    world: int = 1
    local: int = 0  # the rank among this machine's processes (its GPU, where there are GPUs)
    local_world: int = 1  # this machine's processes: they share its train.num_threads

    def threads(self, per_machine: int) -> int:
        """This process's share of the machine's ``train.num_threads``."""
        return max(1, per_machine // self.local_world)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join_group(device: torch.device) -> Rank:
    """Join the process group the environment describes (``WORLD_SIZE`` > 1, set by ``--nproc`` or torchrun): gloo on
    a CPU, NCCL on CUDA. Without one, the single process's :class:`Rank`."""
    import torch.distributed as dist

    local, local_world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return Rank(dist.get_rank(), dist.get_world_size(), local, local_world)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    if not dist.is_available():
        raise LeansegError("This torch build has no torch.distributed; train with --nproc 1 or install a build that has it.")
    from datetime import timedelta

    # rank 0 validates while the others wait at their next all-reduce: allow a long validation
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return Rank(dist.get_rank(), dist.get_world_size(), local, local_world)


def rank_device(device: torch.device, rank: Rank) -> torch.device:
    """Each rank of a group on GPUs takes its machine's GPU ``LOCAL_RANK``; on a CPU, the CPU."""
    if device.type != "cuda" or rank.world == 1:
        return device
    torch.cuda.set_device(rank.local)
    return torch.device("cuda", rank.local)


def local_batch(batch_size: int, rank: Rank) -> int:
    """Each rank's share of the global ``train.batch_size``; refused where the ranks cannot share it evenly."""
    if batch_size % rank.world:
        raise LeansegError(
            f"train.batch_size {batch_size} cannot be shared by {rank.world} processes; set it to a multiple of {rank.world} "
            "(it is the global batch, as in nnU-Net)."
        )
    return batch_size // rank.world


def patch_indices(iteration: int, batch_size: int, rank: Rank):
    """The global patch indices rank ``rank`` reads from ``iteration`` on: its slice of every global batch."""
    share = batch_size // rank.world
    k = iteration
    while True:
        start = k * batch_size + rank.rank * share
        yield from range(start, start + share)
        k += 1


def mean_and_max(loss: float, progress: float, rank: Rank, device: torch.device | None = None) -> tuple[float, float]:
    """The ranks' mean loss and largest progress (one all-reduce each, on ``device``: NCCL reduces GPU tensors only);
    the values themselves in one process."""
    if rank.world == 1:
        return loss, progress
    import torch.distributed as dist

    mean = torch.tensor([loss / rank.world], dtype=torch.float64, device=device)
    most = torch.tensor([progress], dtype=torch.float64, device=device)
    dist.all_reduce(mean)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return float(mean[0]), float(most[0])


def barrier(rank: Rank) -> None:
    if rank.world > 1:
        import torch.distributed as dist

        dist.barrier()


def leave_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, nproc: int, port: int, fn: Any, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
    )
    try:
        fn(*args)
    finally:
        leave_group()


def launch(nproc: int, fn: Any, *args: Any, run_dir: Path | None = None) -> None:
    """Run ``fn(*args)`` in ``nproc`` processes that form one group on this machine. A rank that fails or dies ends
    them all and the launch with one sentence (the run resumes from its last checkpoint when started again)."""
    import torch.multiprocessing as mp

    try:
        mp.spawn(_worker, args=(nproc, _free_port(), fn, args), nprocs=nproc, join=True)
    except mp.ProcessRaisedException as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        last = lines[-1] if lines else "an error"
        sentence = last.split("LeansegError: ", 1)[1] if "LeansegError: " in last else f"it raised {last}"
        raise LeansegError(f"Rank {e.error_index} of {nproc} stopped the run: {sentence}") from None
    except mp.ProcessExitedException as e:
        how = f"was killed by signal {e.signal_name}" if e.signal_name else f"exited with code {e.exit_code}"
        again = f" (`leanseg train --out {run_dir}` again with the same settings)" if run_dir else ""
        raise LeansegError(
            f"Rank {e.error_index} of {nproc} {how}, which ended the run; it resumes from its last checkpoint when started again{again}."
        ) from None
