"""Mixed-quality copies of a dataset: every case degraded at its own seeded severity by MRI artefacts.

Clinical scans differ in quality; the shared hippocampus crops hardly do. ``degrade_dataset`` writes an
MSD folder in which each case (training and test alike) is degraded at a severity drawn uniformly from
0 (clean) to ``max_severity`` (strong), by MONAI's artefact transforms applied in acquisition order:

* a smooth multiplicative bias field (``RandBiasField``, degree 3, coefficients up to 0.5 x severity);
* Gibbs ringing (``GibbsNoise``, alpha 0.7 x severity: the share of k-space cut away);
* a k-space spike (``KSpaceSpikeNoise``, log-intensity 2.5x the mean log magnitude), with probability equal to the severity
  (left out with ``spikes=False``);
* Rician noise (``RandRicianNoise``, standard deviation 0.2 x severity of the image's, relative).

Labels are written unchanged (as NIfTI). ``degradation.json`` records each case's severity and what was applied, so a
benchmark can relate a per-image choice (e.g. AutoPath's path) to image quality.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

BIAS, GIBBS, RICIAN = 0.5, 0.7, 0.2  # the largest coefficient, alpha and relative noise, at severity 1


def degrade(image: np.ndarray, severity: float, rng: np.random.Generator, spikes: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """One image (C, X, Y, Z) degraded at ``severity`` in [0, 1] (0: returned unchanged), and what was applied.
    Without ``spikes`` no k-space spike is added; every other artefact is drawn as with them (the same ``rng``
    gives the same image less its spike)."""
    from monai.transforms import GibbsNoise, KSpaceSpikeNoise, RandBiasField, RandRicianNoise

    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity {severity} is outside [0, 1]")
    out = np.asarray(image, dtype=np.float32).copy()
    applied: dict[str, Any] = {"severity": float(severity)}
    if severity == 0:
        return out, applied
    low = float(out.min())
    out -= low  # the artefacts assume non-negative magnitudes; the offset is restored below
    bias = RandBiasField(degree=3, coeff_range=(-BIAS * severity, BIAS * severity), prob=1.0)
    bias.set_random_state(int(rng.integers(2**31)))
    out = np.asarray(bias(out))
    out = np.asarray(GibbsNoise(alpha=GIBBS * severity)(out))
    applied.update(bias_coefficient=BIAS * severity, gibbs_alpha=GIBBS * severity)
    spike = rng.random() < severity
    loc = tuple(int(rng.integers(s // 4, s - s // 4)) for s in out.shape[1:]) if spike else ()  # drawn with or without spikes
    if spike and spikes:
        k = 2.5 * float(np.log1p(np.abs(np.fft.fftn(out, axes=(1, 2, 3))).mean()))  # MONAI's documented default
        out = np.asarray(KSpaceSpikeNoise(loc=loc, k_intensity=k)(out))
        applied["spike_at"] = list(loc)
    noise = RandRicianNoise(prob=1.0, std=RICIAN * severity, relative=True, sample_std=False)
    noise.set_random_state(int(rng.integers(2**31)))
    out = np.asarray(noise(out))
    applied["rician_relative_std"] = RICIAN * severity
    return (out + low).astype(np.float32), applied


def degrade_dataset(
    source: Path | str, out_dir: Path | str, seed: int = 0, max_severity: float = 1.0, progress: bool = False, spikes: bool = True
) -> Path:
    """Write ``source``'s cases, each degraded at a seeded severity in [0, ``max_severity``], as an MSD folder
    (``dataset.json``, ``imagesTr``, ``labelsTr``, ``degradation.json``) at ``out_dir``; ``spikes=False`` leaves
    the k-space spikes out (one spike costs a model most of its Dice; see docs/benchmarks/autopath.md)."""
    from leanseg.data.datasets import load_dataset
    from leanseg.data.io import read_image, read_label, write_image, write_label
    from leanseg.data.synthetic import write_msd_json
    from leanseg.errors import LeansegError
    from leanseg.names import check_case_id

    if not 0.0 <= max_severity <= 1.0:
        raise LeansegError(f"--max-severity {max_severity} is outside [0, 1]; 1 is the strongest degradation.")
    ds = load_dataset(source)
    out = Path(out_dir)
    if out.resolve() == Path(ds.root).resolve():
        raise LeansegError(f"{out} is the source folder; write the degraded copy to a new folder.")
    work = out / ".leanseg-degrade.partial"  # inside the folder named: its parts move up once every case is written
    if out.exists() and any(p != work for p in out.iterdir()):
        raise LeansegError(f"{out} is not empty; choose a new folder for the degraded copy or remove it.")
    shutil.rmtree(work, ignore_errors=True)  # what a killed run of this command left
    for sub in ("imagesTr", "labelsTr"):
        (work / sub).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    record, training = {}, []
    cases = ds.cases
    if progress:
        from leanseg.utils import progress_bar

        cases = progress_bar("degrading")(cases)  # type: ignore[assignment]
    for case in cases:
        volume = read_image(list(case.images))
        severity = float(rng.uniform(0.0, max_severity))
        image, applied = degrade(volume.array, severity, np.random.default_rng(rng.integers(2**32)), spikes)
        name = f"{check_case_id(case.case_id, ds.root / 'dataset.json')}.nii.gz"
        write_image(work / "imagesTr" / name, np.moveaxis(image, 0, -1) if image.shape[0] > 1 else image[0], volume.affine)
        if case.label is not None:
            label = read_label(case.label)
            write_label(work / "labelsTr" / name, label.array, label.affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        record[case.case_id] = applied
    (work / "degradation.json").write_text(json.dumps(record, indent=1))
    description = f"{ds.name}, each case degraded at a severity in [0, {max_severity:g}] (leanseg degrade, seed {seed}"
    description += ")" if spikes else ", no k-space spikes)"
    write_msd_json(work, f"{ds.name}_mixed", description, ds.channel_names, ds.labels, training)
    for part in ("imagesTr", "labelsTr", "degradation.json", "dataset.json"):  # dataset.json last: a folder without it is no dataset
        (work / part).rename(out / part)
    work.rmdir()
    return out
