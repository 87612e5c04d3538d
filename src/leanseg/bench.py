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

    commit = code_commit(Path(__file__).resolve().parents[2])
    return {
        "cpu": cpu_name(),
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


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name with its family and model numbers where ``cpuinfo`` (default: /proc/cpuinfo) gives them:
    one model name covers CPUs that differ (here an AVX2-only AMD EPYC ran a hippocampus bf16 step 20x slower than a
    Zen 4 one, both 'AMD EPYC'), and kept cells compare this string."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor's block is enough
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name", platform.processor())
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    return name


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


def run_isolated(fn: Callable[..., Any], *args: Any, inline: bool = False, **kwargs: Any) -> tuple[Any, float]:
    """Run ``fn`` in a fresh process; return its result and that process's peak RSS in MiB.

    ``inline`` runs it here instead (a smoke run: no process start-up, and the memory figure is this process's).
    """
    if inline:
        return fn(*args, **kwargs), peak_rss_mib()
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


def saved_for_backward(fn: Callable[[], Any], parameters: bool = True) -> tuple[int, Any]:
    """Run ``fn`` and count the bytes autograd keeps for backward: unique storages seen by the saved-tensor hooks.

    A storage saved twice (a view, an input reused by two layers) counts once, as memory does. ``parameters``
    False leaves out saved weights (they exist anyway): the activations alone.
    """
    import torch

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if parameters or not isinstance(t, torch.nn.Parameter):
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


# --- the frame every benchmark script shares: arguments -> config -> library calls -> one results writer ----------
def panels(n: int = 2, figsize: tuple[float, float] = (10, 4)) -> tuple[Any, Any]:
    """A figure of ``n`` axes side by side on matplotlib's Agg back-end (benchmarks draw without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, n, figsize=figsize)


def save_figure(fig: Any, axes: Any, path: Path, legend_size: int = 7, dpi: int = 100) -> None:
    """A light grid and a legend on each of ``axes``, then the figure written to ``path`` and closed."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def benchmark_arguments(ap: Any, name: str, work: str) -> None:
    """Add the options every benchmark has: ``--smoke``, ``--results``, ``--name`` and ``--work``."""
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a run of under a minute on synthetic phantoms, written under --work: checks the benchmark still runs, measures nothing",
    )
    ap.add_argument(
        "--results", default=None, help="folder for NAME.{json,md,png} (default: benchmarks/results; with --smoke: WORK/results)"
    )
    ap.add_argument("--name", default=name, help="results file stem")
    ap.add_argument("--work", default=work, help="folder for the runs the benchmark trains (kept for --reuse)")


def results_folder(args: Any, committed: Path) -> Path:
    """Where a benchmark writes: ``--results``, else WORK/results for a smoke run (never the committed folder), else ``committed``."""
    if args.results:
        return Path(args.results)
    return Path(args.work) / "results" if args.smoke else committed


def held_out_references(dataset: Any, case_ids: list[str], folder: Path) -> Path:
    """Copy the label files of ``case_ids`` into a fresh ``folder``: the references a held-out fold is scored against."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for c in case_ids:
        shutil.copy(dataset.case(c).label, folder / dataset.case(c).label.name)
    return folder


def predict_held_out(run: Path | list[Path], data: str, refs: Path, out: Path, settings: dict, threads: int) -> dict:
    """Predict the original image files of the cases in ``refs`` with ``run`` (several runs: an ensemble) and
    ``settings`` (InferenceConfig overrides) into ``out``; returns the seconds per case."""
    import torch

    from leanseg.data.datasets import load_dataset
    from leanseg.inference import Predictor

    torch.set_num_threads(threads)
    ds = load_dataset(data)
    ids = sorted(p.name.split(".")[0] for p in refs.iterdir())
    predictor = Predictor.from_run(run, num_threads=threads, **settings)
    results = predictor.predict_files([(c, list(ds.case(c).images)) for c in ids], out)
    return {"predict_seconds_per_case": sum(r.seconds for r in results) / len(results)}


def smoke_phantoms(work: Path, num_cases: int = 10) -> Path:
    """A small phantom dataset (MSD layout, two classes) for a benchmark's ``--smoke`` run; reused when present."""
    from leanseg.data.synthetic import generate_phantom_dataset

    folder = Path(work) / "phantoms"
    if not (folder / "dataset.json").is_file():
        generate_phantom_dataset(folder, num_cases=num_cases, seed=0, sizes=((24, 28, 24), (28, 28, 24)))
    return folder


class Results:
    """One benchmark's results file: a header (machine, versions, threads, split, seed, commit), its sections, one writer.

    ``earlier`` is the file as the last call left it, read once before this call rewrites it. ``keep`` copies a
    section from it and records in ``kept`` the commit and date that produced it, so that a table can say where its
    figures come from; ``merge`` re-reads the file to take sections another process wrote meanwhile.
    """

    def __init__(
        self,
        folder: Path,
        name: str,
        benchmark: str,
        render: Callable[[dict[str, Any]], str],
        plot: Callable[[dict[str, Any], Path], None] | None = None,
        *,
        threads: int,
        seed: Any,
        split: str,
        data: str,
        smoke: bool = False,
        **settings: Any,
    ) -> None:
        self.path = Path(folder) / f"{name}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.earlier: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data: dict[str, Any] = {
            "benchmark": benchmark,
            "name": name,
            "machine": machine_info(threads),
            "seed": seed,
            "split": split,
            "data": data,
            **({"smoke": True} if smoke else {}),
            **settings,
        }
        self._render, self._plot = render, plot

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        """Set a section, measured by this call: a ``kept`` stamp of the earlier file's section no longer applies."""
        self.data[key] = value
        self.data.get("kept", {}).pop(key, None)

    def put(self, key: str, sub: str, value: Any) -> None:
        """Set ``key[sub]``, measured by this call: a ``kept`` stamp of the earlier file's ``key/sub`` no longer applies."""
        self.data.setdefault(key, {})[sub] = value
        self.data.get("kept", {}).pop(f"{key}/{sub}", None)

    def setdefault(self, key: str, default: Any) -> Any:
        return self.data.setdefault(key, default)

    def stamp(self, source: dict[str, Any] | None = None) -> str:
        m = (source if source is not None else self.earlier).get("machine", {})
        return f"commit {m.get('leanseg_commit', '?')}, {m.get('date', '?')}, {m.get('cpu', '?')}"

    def keep(self, key: str, sub: str | None = None) -> bool:
        """Take ``key`` (or ``key[sub]``) from the earlier file, recording its stamp in ``kept``; False where it has none."""
        old = self.earlier.get(key)
        if not old or (sub is not None and sub not in old):  # an empty section measured nothing worth a stamp
            return False
        if sub is None:
            self.data[key] = old
        else:
            self.data.setdefault(key, {})[sub] = old[sub]
        kept, name = self.earlier.get("kept", {}), key if sub is None else f"{key}/{sub}"
        # the earlier file may itself have kept the part (or the whole section it belongs to) from a call before it
        self.data.setdefault("kept", {})[name] = kept.get(name, kept.get(key, self.stamp()))
        return True

    def keep_cells(self, section: str, same: tuple[str, ...] = (), same_cpu: bool = True) -> None:
        """Keep each cell (``section[key]``) of the earlier file where its ``same`` settings equal this call's, so that
        a long grid of training cells runs in parts. With ``same_cpu`` (cells of a wall-clock budget), cells trained on
        another CPU are refused with a sentence: what such a budget buys depends on the machine (1.9x more iterations
        between two machines of this project). Cells of an iteration budget pass ``same_cpu=False``."""
        here = self.data["machine"]["cpu"]
        for key, cell in self.earlier.get(section, {}).items():
            cpu = cell.get("cpu", self.earlier.get("machine", {}).get("cpu"))
            if same_cpu and cpu != here:
                raise SystemExit(
                    f"{self.path} holds {section} {key} trained on {cpu}, and this machine is {here}: a cell's budget buys "
                    "other iterations on another machine, so pass --name NEW to start this machine's table."
                )
            if all(self.earlier.get(k) == self.data.get(k) for k in same):
                self.keep(section, key)

    def merge(self, keys: tuple[str, ...], same: tuple[str, ...]) -> None:
        """Re-read the file and take its ``keys`` sections when its ``same`` settings equal this call's."""
        last = json.loads(self.path.read_text()) if self.path.is_file() else {}
        if all(last.get(k) == self.data.get(k) for k in same):
            self.data.update({k: last[k] for k in keys if k in last})

    def markdown(self) -> str:
        return self._render(self.data)

    def write(self, with_plot: bool = False) -> None:
        """Write NAME.json and NAME.md (and NAME.png where ``with_plot`` and the benchmark draws one)."""
        if with_plot and self._plot is not None:
            self._plot(self.data, self.path.with_suffix(".png"))
        write_results(self.path, self.data, self.markdown())


def header_markdown(r: dict[str, Any]) -> list[str]:
    """The lines every results page opens with: machine, versions, threads, commit and date; data, split and seed."""
    m = r["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB; {m['threads']} threads; "
        f"Python {m['python']}, torch {m['torch']}, MONAI {m['monai']}, ONNX Runtime {m['onnxruntime']}; "
        f"commit {m['leanseg_commit']}; {m['date']}.",
        f"Data: {r.get('data', '?')}; split: {r.get('split', '?')}; seed {r.get('seed', '?')}.",
    ]
    if r.get("smoke"):
        lines.insert(0, "**Smoke run** (phantoms, a few iterations): it checks that the benchmark runs; its figures measure nothing.")
    for section, stamp in r.get("kept", {}).items():
        lines.append(f"`{section}` kept from an earlier call ({stamp}).")
    return [*lines, ""]
