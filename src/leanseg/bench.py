"""Measurement helpers shared by the benchmarks: machine facts, peak memory, timing in a child process.

Every benchmark records these beside its figures (DESIGN.md, example 9).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def code_commit(root: Path) -> str:
    """The short commit of the git checkout at ``root``, marked where its code (results files aside) has uncommitted changes."""
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", "src", "configs", "benchmarks", ":!benchmarks/results"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return ""
    return f"{commit} + uncommitted changes" if commit and changed else commit


def machine_info(threads: int | None = None) -> dict[str, Any]:
    import monai
    import numpy
    import onnxruntime
    import psutil
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = code_commit(Path(__file__).resolve().parents[2])
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "threads": threads if threads is not None else __import__("torch").get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "monai": monai.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "leanseg_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process's own memory. Not
    ``getrusage``: its ``ru_maxrss`` survives fork and exec, so a child started by a large parent
    would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def _child(fn: Callable[..., Any], args: tuple, kwargs: dict, queue: Any) -> None:
    try:
        result = fn(*args, **kwargs)
        queue.put(("ok", result, peak_rss_mib()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        queue.put(("error", repr(e), peak_rss_mib()))


def run_isolated(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Run ``fn`` in a fresh process; return its result and that process's peak RSS in MiB."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, kwargs, q))
    p.start()
    status, result, rss = q.get()
    p.join()
    if status != "ok":
        raise RuntimeError(f"isolated run failed: {result}")
    return result, rss


def timing_stats(seconds: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(seconds),
        "median": statistics.median(seconds),
        "std": statistics.pstdev(seconds),
        "min": min(seconds),
        "max": max(seconds),
        "n": len(seconds),
    }


def write_results(path_json: Path, data: dict[str, Any], markdown: str) -> None:
    from leanseg.utils import atomic_write_text

    atomic_write_text(Path(path_json), json.dumps(data, indent=1, default=float))
    atomic_write_text(Path(path_json).with_suffix(".md"), markdown)
