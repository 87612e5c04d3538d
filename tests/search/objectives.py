"""Trial functions for the search tests (importable, as spawned processes and Ray workers need)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def quadratic(x: list[float], marker_dir: str | None = None, trial: int = -1, sleep: float = 0.0, crash_above: float | None = None) -> dict:
    """Reward -sum((x - 0.3)^2); writes a marker per call; dies (no Python exception) when x[0] > crash_above."""
    if marker_dir:
        Path(marker_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(marker_dir) / f"trial_{trial}", "a") as f:
            f.write("run\n")
    if sleep:
        time.sleep(sleep)
    if crash_above is not None and x[0] > crash_above:
        os._exit(3)
    return {"reward": -sum((v - 0.3) ** 2 for v in x)}


def raising(x: list[float]) -> dict:
    raise RuntimeError("this trial breaks")


def sleeper(pid_file: str, seconds: float = 60.0) -> dict:
    """Writes its process id, then sleeps: a long trial whose process a test can look for."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return {"reward": 0.0}
