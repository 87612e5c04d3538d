"""One reader and writer of a run folder, so no command reads a run's files back by hand.

A run folder holds ``config.yaml`` (resolved), ``plan.json``, ``fingerprint.json``, ``splits.json``,
``run.json`` (the dataset folder and fold it was trained on), ``checkpoint_latest.pt`` /
``checkpoint_final.pt``, ``metrics.csv``, ``training_curve.png`` and ``summary.json``. Commands that act
on a run (``predict``, ``train-policy``, ``drop-sweep``) take the folder alone: it knows its data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leanseg.config import ExperimentConfig
from leanseg.errors import LeansegError
from leanseg.plan import Plan
from leanseg.utils import atomic_write_text


class RunFolder:
    """A training run's folder: typed access to what ``leanseg train`` (or a search) wrote there."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def create(self) -> RunFolder:
        if self.path.exists() and not self.path.is_dir():
            raise LeansegError(f"Output {self.path} is a file; pass a folder for the run.")
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def latest(self) -> Path:
        return self.path / "checkpoint_latest.pt"

    @property
    def final(self) -> Path:
        return self.path / "checkpoint_final.pt"

    def checkpoint(self) -> Path:
        """The final checkpoint, else the latest; refused with a sentence where neither exists."""
        for p in (self.final, self.latest):
            if p.is_file():
                return p
        raise LeansegError(f"No checkpoint in {self.path}; train a model there first (`leanseg train --out {self.path}`).")

    # reading
    def _json(self, name: str) -> Any:
        p = self.path / name
        if not p.is_file():
            raise LeansegError(f"{p} is missing; pass the run folder written by `leanseg train`.")
        try:
            return json.loads(p.read_text())
        except ValueError as e:
            raise LeansegError(f"{p} is damaged ({e}); retrain into a new --out.") from e

    def config(self) -> ExperimentConfig:
        return ExperimentConfig.load(self.config_path)

    def plan(self) -> Plan:
        return Plan.from_dict(self._json("plan.json"), self.path / "plan.json")

    def splits(self) -> list[dict[str, list[str]]]:
        return self._json("splits.json")

    def split(self, fold: int | str | None = None) -> dict[str, list[str]]:
        """The train/val case ids of ``fold`` (default: the fold the run was trained on; ``all``: every case)."""
        from leanseg.data.prepare import select_fold, validation_fold

        fold = validation_fold(self.config().data) if fold is None else fold
        return select_fold(self.splits(), fold, f" in {self.path / 'splits.json'}")

    def summary(self) -> dict[str, Any]:
        return self._json("summary.json")

    def data_dir(self, override: Path | str | None = None) -> Path:
        """The dataset folder the run was trained on (``override``, e.g. ``-d``, wins); refused where unknown."""
        if override is not None:
            return Path(override)
        p = self.path / "run.json"
        if p.is_file():
            return Path(json.loads(p.read_text())["data_dir"])
        raise LeansegError(f"{self.path} does not record its dataset folder (written before run.json existed); pass --data.")

    # writing
    def write_setup(self, cfg: ExperimentConfig, plan: Plan, fingerprint: dict[str, Any], splits: list[Any], data_dir: Path) -> None:
        """Everything a run knows before its first step: config, plan, fingerprint, splits and where its data are."""
        cfg.save(self.config_path)
        atomic_write_text(self.path / "plan.json", json.dumps(plan.to_dict(), indent=1))
        atomic_write_text(self.path / "fingerprint.json", json.dumps(fingerprint))
        atomic_write_text(self.path / "splits.json", json.dumps(splits, indent=1))
        atomic_write_text(
            self.path / "run.json",
            json.dumps({"data_dir": str(Path(data_dir).resolve()), "fold": cfg.data.fold, "inner_fold": cfg.data.inner_fold}, indent=1),
        )

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=1))

    def write_model_only(self, cfg: ExperimentConfig, plan: Plan) -> None:
        """Config and plan of a run that has weights but no training of its own (a search's chosen child)."""
        self.create()
        cfg.save(self.config_path)
        atomic_write_text(self.path / "plan.json", json.dumps(plan.to_dict(), indent=1))
