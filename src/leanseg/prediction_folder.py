"""The folder ``leanseg predict`` writes into: which folders it refuses, and which files it may replace.

Prediction writes one label file per case. It refuses, before any network runs, an output folder that would
destroy what a user owns: a folder holding the inputs (or inside which they lie), a dataset folder or its
``imagesTr``/``labelsTr``/``imagesTs`` (``evaluate`` would then score labels against themselves), a training run's
folder. In the folder it accepts, ``.leanseg-predictions.json`` records each file it wrote (the case and the model):
an existing file is replaced only where that record says it is this case's earlier prediction, and a folder holding
another model's predictions is refused, so that two models' outputs never mix in one folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leanseg.errors import LeansegError
from leanseg.utils import atomic_write_text

RECORD = ".leanseg-predictions.json"
DATASET_PARTS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


def is_run_folder(path: Path) -> bool:
    """A folder ``leanseg train`` (or a search's final child) wrote: a config and plan, or a checkpoint."""
    path = Path(path)
    return ((path / "config.yaml").is_file() and (path / "plan.json").is_file()) or any(path.glob("checkpoint_*.pt"))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output_folder(out_dir: Path, inputs: list[Path]) -> None:
    """Refuse an output folder that is or holds an input folder, belongs to a dataset, or is a run folder."""
    out = Path(out_dir).resolve()
    for src in inputs:
        folder = Path(src).resolve()
        folder = folder if folder.is_dir() else folder.parent  # a DICOM series is its folder; a file, the one holding it
        if _within(folder, out):
            raise LeansegError(
                f"The output folder {out_dir} {'is' if folder == out else 'holds'} the input folder {folder}: the label files "
                "would replace or mix with the images; pass a new --output folder."
            )
    if (out / "dataset.json").is_file() or (out.name in DATASET_PARTS and (out.parent / "dataset.json").is_file()):
        raise LeansegError(
            f"The output folder {out_dir} is part of the dataset {out if (out / 'dataset.json').is_file() else out.parent}: "
            "predictions there would replace its images or reference labels; pass a new --output folder."
        )
    if is_run_folder(out):
        raise LeansegError(f"The output folder {out_dir} is a training run's folder; pass a new --output folder for the predictions.")


class PredictionRecord:
    """``RECORD`` in an output folder: the files prediction wrote there, each with its case, and the model that did."""

    def __init__(self, out_dir: Path, model: str) -> None:
        self.out_dir, self.model, self.path = Path(out_dir), model, Path(out_dir) / RECORD
        self.files: dict[str, str] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                other, self.files = str(data["model"]), {str(k): str(v) for k, v in data["files"].items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                raise LeansegError(
                    f"{self.path} is damaged; remove it (and the predictions it lists) or pass a new --output folder."
                ) from None
            if self.files and other != model:
                raise LeansegError(
                    f"{out_dir} holds predictions of another model ({other}); pass a new --output folder so that two models' "
                    "label files do not mix."
                )

    def check_targets(self, targets: dict[str, Path]) -> None:
        """Refuse (before any work) a target file that exists but is not this case's earlier prediction."""
        for case_id, target in targets.items():
            if (target.exists() or target.is_symlink()) and self.files.get(target.name) != case_id:
                raise LeansegError(
                    f"{target} exists and is not an earlier prediction of case '{case_id}' by leanseg; move it away or pass "
                    "a new --output folder (leanseg never overwrites a file it did not write)."
                )

    def claim(self, targets: dict[str, Path]) -> None:
        """Record the targets as these cases' predictions before any is written: a file that then exists under a
        claimed name was written by leanseg (atomically, so whole), even where the job was killed right after."""
        self.files.update({t.name: case_id for case_id, t in targets.items()})
        atomic_write_text(self.path, json.dumps(self.to_dict(), indent=1))

    def complete(self, case_id: str, target: Path) -> bool:
        """``target`` holds ``case_id``'s prediction from an earlier job (``--continue`` skips it)."""
        return target.is_file() and self.files.get(target.name) == case_id

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "files": self.files}
