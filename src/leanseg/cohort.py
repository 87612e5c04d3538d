"""Cohort prediction on Ray: a study's archive segmented by workers on one machine or many.

``leanseg predict ... --ray-address ADDR`` checks and locks the output folder as a plain prediction does
(:meth:`leanseg.inference.Predictor.output_folder`), then hands the cases to Ray actors, one model load per
worker, one case at a time each. Every output is written atomically by its worker. A worker that dies (a killed
process, a lost machine) is restarted by Ray and its case retried; a case an earlier attempt of this job already
wrote is not written again (its file is newer than the job's start), so no output is written twice. A case that
still fails after its retries is reported by name, and ``--continue`` skips the outputs an earlier job completed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanseg.inference import CaseResult, Predictor
from leanseg.utils import connect_ray, ray_error_line, set_threads

TASK_RETRIES = 2  # a case is tried again this many times on a restarted worker before it counts as failed


class PredictWorker:
    """A Ray actor's state: one model, loaded once, predicting case after case."""

    def __init__(self, runs: list[str], options: dict[str, Any], threads: int) -> None:
        set_threads(threads)
        self.predictor = Predictor.from_run([Path(r) for r in runs], num_threads=threads, **options)

    def predict(self, case_id: str, files: list[str], target: str, job_start_ns: int, output_format: str) -> CaseResult:
        """Predict one case into ``target``; a target this job already wrote (an attempt killed after its rename) is kept."""
        out = Path(target)
        if out.is_file() and out.stat().st_mtime_ns >= job_start_ns:
            return CaseResult(case_id, out, 0.0)
        return self.predictor.predict_case(case_id, [Path(f) for f in files], out, output_format)


@dataclass
class CohortSummary:
    """What a cohort job did: predicted cases, cases an earlier job had done, and failed ones with their error."""

    done: list[CaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    workers: int = 0


def predict_cohort(
    predictor: Predictor,
    runs: list[Path],
    options: dict[str, Any],
    cases: list[tuple[str, list[Path]]],
    out_dir: Path,
    address: str,
    workers: int | None = None,
    threads: int = 1,
    resume: bool = False,
    output_format: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> CohortSummary:
    """Predict ``cases`` into ``out_dir`` on Ray workers (``workers``: default the cluster's CPUs / ``threads``), each
    loading ``runs`` with ``options`` (InferenceConfig overrides); ``predictor`` (the same runs, here) checks the folder.
    ``progress(ended, total)`` is called as cases end."""
    ray = connect_ray(address)
    summary = CohortSummary()
    with predictor.output_folder(cases, out_dir, output_format, resume) as (targets, todo, skipped):
        summary.skipped = skipped
        if not todo:
            return summary
        summary.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        actor = ray.remote(num_cpus=threads, max_restarts=-1, max_task_retries=TASK_RETRIES)(PredictWorker)
        pool = [actor.remote([str(r.resolve()) for r in runs], options, threads) for _ in range(min(summary.workers, len(todo)))]
        _run(ray, pool, todo, targets, time.time_ns() - 1, output_format, summary, progress)
        for a in pool:
            ray.kill(a)
    return summary


def _run(
    ray: Any,
    pool: list[Any],
    todo: list[tuple[str, list[Path]]],
    targets: dict[str, Path],
    job_start_ns: int,
    output_format: str,
    summary: CohortSummary,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Keep one case in flight per worker until every case has ended (done or failed)."""
    waiting = list(reversed(todo))
    running: dict[Any, tuple[Any, str]] = {}

    def submit(worker: Any) -> None:
        if waiting:
            case_id, files = waiting.pop()
            ref = worker.predict.remote(case_id, [str(f) for f in files], str(targets[case_id]), job_start_ns, output_format)
            running[ref] = (worker, case_id)

    for worker in pool:
        submit(worker)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        worker, case_id = running.pop(ready[0])
        try:
            summary.done.append(ray.get(ready[0]))
        except Exception as e:  # the case's own error, or its worker lost after every retry
            summary.failed[case_id] = ray_error_line(e)
        if progress:
            progress(len(summary.done) + len(summary.failed), len(todo))
        submit(worker)
