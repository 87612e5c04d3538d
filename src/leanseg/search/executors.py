"""Executors run trials; controllers propose them. A trial is ``fn(**kwargs) -> dict`` with a ``reward``.

* :class:`LocalExecutor`: each trial in its own spawned process, at most ``parallel`` at once. A trial
  that raises, crashes or is killed (the kernel's out-of-memory killer) is reported as failed.
* :class:`InProcessExecutor`: one trial at a time in this process, for trials that share state here (the
  architecture search's supernet). A trial that raises stops the search, as a plain loop would.
* :class:`RayExecutor`: the same on a Ray cluster (``ray.init(address=...)``; ``"local"`` starts one
  on this machine). Ray is an optional extra: ``pip install "leanseg[ray]"``.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanseg.errors import LeansegError
from leanseg.utils import connect_ray, ray_error_line


@dataclass
class TrialOutcome:
    trial_id: int
    ok: bool
    result: dict[str, Any] | None
    error: str | None
    seconds: float


def _die_with_parent(parent: int) -> None:
    """End this trial process when the search that started it ends, however it ends (SIGKILL included): a resumed
    search would otherwise run the same trial into the same folder beside the orphan. Linux: the kernel's
    parent-death signal; elsewhere a thread that watches the parent's pid."""
    import os
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _child(fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any], result_path: str, parent: int | None = None) -> None:
    from leanseg.utils import atomic_write_text

    if parent is not None:
        _die_with_parent(parent)

    try:
        res = {"ok": True, "result": fn(**kwargs)}
    except BaseException as e:  # the parent records every failure, whatever its type
        res = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    atomic_write_text(Path(result_path), json.dumps(res))


class LocalExecutor:
    """Trials in spawned processes on this machine."""

    def __init__(self, parallel: int = 1, work_dir: Path | None = None) -> None:
        import tempfile

        if parallel < 1:
            raise LeansegError(f"--parallel must be at least 1, got {parallel}.")
        self.parallel = parallel
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="leanseg_trials_"))
        self._running: dict[int, tuple[Any, Path, float]] = {}

    def submit(self, trial_id: int, fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> None:
        import multiprocessing as mp

        path = self.work_dir / f"result_{trial_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        import os

        p = mp.get_context("spawn").Process(target=_child, args=(fn, kwargs, str(path), os.getpid()), daemon=False)
        p.start()
        self._running[trial_id] = (p, path, time.perf_counter())

    def running(self) -> int:
        return len(self._running)

    def wait_any(self, poll_s: float = 0.2) -> list[TrialOutcome]:
        """Block until at least one running trial ends; return every trial that has ended."""
        while True:
            done = []
            for tid, (p, path, t0) in list(self._running.items()):
                if p.is_alive():
                    continue
                p.join()
                seconds = time.perf_counter() - t0
                del self._running[tid]
                if path.is_file():
                    res = json.loads(path.read_text())
                    done.append(TrialOutcome(tid, res["ok"], res.get("result"), res.get("error"), seconds))
                else:
                    why = "killed (out of memory?)" if p.exitcode and p.exitcode < 0 else "crashed"
                    done.append(TrialOutcome(tid, False, None, f"trial process {why}, exit code {p.exitcode}", seconds))
            if done or not self._running:
                return done
            time.sleep(poll_s)

    def shutdown(self) -> None:
        for p, _, _ in self._running.values():
            p.terminate()
            p.join()
        self._running.clear()


class InProcessExecutor:
    """Trials run in this process, one at a time, when submitted; their exceptions propagate."""

    parallel = 1

    def __init__(self) -> None:
        self._done: list[TrialOutcome] = []

    def submit(self, trial_id: int, fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        result = fn(**kwargs)
        self._done.append(TrialOutcome(trial_id, True, result, None, time.perf_counter() - t0))

    def running(self) -> int:
        """Trials submitted and not yet collected: a submitted trial has already run, so this is 0 or 1."""
        return len(self._done)

    def wait_any(self, poll_s: float = 0.0) -> list[TrialOutcome]:
        done, self._done = self._done, []
        return done

    def shutdown(self) -> None:
        self._done.clear()


def _ray_call(fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, Any]:
    return fn(**kwargs)


class RayExecutor:
    """Trials as Ray tasks; ``address`` is a cluster address, or ``"local"`` for a cluster on this machine."""

    def __init__(self, address: str, parallel: int = 1, cpus_per_trial: float = 1.0, num_cpus: int | None = None) -> None:
        self.ray = ray = connect_ray(address, num_cpus)
        self.parallel = parallel
        self._task = ray.remote(num_cpus=cpus_per_trial, max_retries=0)(_ray_call)
        self._running: dict[Any, tuple[int, float]] = {}

    def submit(self, trial_id: int, fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> None:
        self._running[self._task.remote(fn, kwargs)] = (trial_id, time.perf_counter())

    def running(self) -> int:
        return len(self._running)

    def wait_any(self, poll_s: float = 0.2) -> list[TrialOutcome]:
        if not self._running:
            return []
        ready, _ = self.ray.wait(list(self._running), num_returns=1)
        out = []
        for ref in ready:
            tid, t0 = self._running.pop(ref)
            try:
                out.append(TrialOutcome(tid, True, self.ray.get(ref), None, time.perf_counter() - t0))
            except Exception as e:  # RayTaskError, WorkerCrashedError, OutOfMemoryError: all mean a failed trial
                out.append(TrialOutcome(tid, False, None, ray_error_line(e), time.perf_counter() - t0))
        return out

    def shutdown(self) -> None:
        for ref in self._running:
            self.ray.cancel(ref, force=True)
        self._running.clear()
