"""Seeded synthetic chest CTs with lung nodules (LUNA16-like), written as an MSD dataset folder.

Large volumes with small targets, for the LowRes two-stage model's timing and FROC analysis: a body
of soft tissue (about 40 HU) in air (-1000 HU), two lungs (about -850 HU) with vessel-like branching
texture, a spine (about 700 HU), and several nodules of 3 to 30 mm diameter (log-uniform; solid, or
ground-glass at about -450 HU) with lobulated surfaces, placed inside the lungs without touching
each other. Gaussian noise (25 HU) and a slight blur stand in for the scanner. Label 1: nodule.
Images are written as int16 Hounsfield units.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from leanseg.data.io import write_image, write_label
from leanseg.data.synthetic import write_msd_json

LABELS = {0: "background", 1: "nodule"}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return n / (n.std() + 1e-8)


def make_chest(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    num_nodules: tuple[int, int] = (2, 6),
    diameter_mm: tuple[float, float] = (3.0, 30.0),
) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:
    """One (image int16 HU, label uint8, nodule list) of ``shape`` (x, y, z) voxels."""
    X, Y, Z = shape
    x, y, z = np.ogrid[:X, :Y, :Z]
    x, y, z = x.astype(np.float32), y.astype(np.float32), z.astype(np.float32)
    body = ((x - X / 2) / (0.46 * X)) ** 2 + ((y - Y / 2) / (0.36 * Y)) ** 2 <= 1.0
    body = np.broadcast_to(body, shape)
    image = np.where(body, 40 + 15 * _smooth_noise(rng, shape, 3.0), -1000).astype(np.float32)
    lungs = np.zeros(shape, bool)
    for side in (0.3, 0.7):
        c = np.array([side * X, 0.47 * Y, 0.5 * Z]) + rng.normal(0, 0.01, 3) * np.array(shape)
        r = np.array([0.16 * X, 0.23 * Y, 0.42 * Z]) * rng.uniform(0.93, 1.07, 3)
        lungs |= ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1.0
    # vessels: thin level sets of smooth noise look like branching tubes and sheets in slices
    vessels = lungs & (np.abs(_smooth_noise(rng, shape, 4.0)) < 0.07)
    image[lungs] = -850 + 25 * _smooth_noise(rng, shape, 1.5)[lungs]
    image[vessels] = -80 + 40 * rng.standard_normal(int(vessels.sum()), dtype=np.float32)
    spine = np.broadcast_to(((x - X / 2) / (0.06 * X)) ** 2 + ((y - 0.8 * Y) / (0.06 * Y)) ** 2 <= 1.0, shape)
    image[spine] = 700
    label = np.zeros(shape, np.uint8)
    nodules: list[dict[str, float]] = []
    sp = np.asarray(spacing, dtype=np.float32)
    inner = ndimage.binary_erosion(lungs, iterations=3)
    candidates = np.argwhere(inner)
    target = int(rng.integers(num_nodules[0], num_nodules[1] + 1))
    tries = 0
    while len(nodules) < target and tries < 200 and len(candidates):
        tries += 1
        d = float(np.exp(rng.uniform(np.log(diameter_mm[0]), np.log(diameter_mm[1]))))
        centre = candidates[rng.integers(len(candidates))]
        r_vox = d / 2 / sp
        lo = np.maximum(np.floor(centre - 1.3 * r_vox - 2).astype(int), 0)
        hi = np.minimum(np.ceil(centre + 1.3 * r_vox + 3).astype(int), shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        gx, gy, gz = np.ogrid[box]
        dist = np.sqrt(((gx - centre[0]) * sp[0]) ** 2 + ((gy - centre[1]) * sp[1]) ** 2 + ((gz - centre[2]) * sp[2]) ** 2)
        wobble = 1 + 0.12 * _smooth_noise(rng, dist.shape, 2.0) if min(dist.shape) > 4 else 1.0
        obj = dist <= (d / 2) * wobble
        if not obj.any() or not inner[box][obj].all():
            continue  # keep nodules inside the lung
        grown = ndimage.binary_dilation(obj, iterations=2)
        if label[box][grown].any():
            continue  # and apart from each other
        solid = rng.random() < 0.75
        hu = (rng.uniform(0, 80) if solid else rng.uniform(-550, -350)) + 20 * rng.standard_normal(obj.shape)
        region = image[box]
        region[obj] = hu[obj]
        label[box][obj] = 1
        nodules.append({"x": float(centre[0]), "y": float(centre[1]), "z": float(centre[2]), "diameter_mm": d, "solid": float(solid)})
    image = ndimage.gaussian_filter(image, 0.7) + rng.normal(0, 25, shape).astype(np.float32)
    return np.clip(image, -1024, 3071).astype(np.int16), label, nodules


def generate_chest_dataset(
    out_dir: Path | str,
    num_cases: int = 8,
    seed: int = 0,
    shape: tuple[int, int, int] = (300, 300, 200),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.5),
    progress: bool = False,
) -> Path:
    """Write ``num_cases`` chest CTs as an MSD folder (``dataset.json``, ``imagesTr``, ``labelsTr``, ``nodules.json``)."""
    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])
    training, all_nodules = [], {}
    cases = range(num_cases)
    if progress:
        from leanseg.utils import progress_bar

        cases = progress_bar("chest CTs")(cases)  # type: ignore[assignment]
    for i in cases:
        image, label, nodules = make_chest(shape, spacing, np.random.default_rng(rng.integers(2**32)))
        name = f"chest_{i:03d}.nii.gz"
        write_image(out / "imagesTr" / name, image, affine)
        write_label(out / "labelsTr" / name, label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        all_nodules[f"chest_{i:03d}"] = nodules
    (out / "nodules.json").write_text(json.dumps(all_nodules, indent=1))
    write_msd_json(out, "SyntheticChest", f"leanseg synthetic LUNA16-like chest CTs with nodules (seed {seed})", "CT", LABELS, training)
    return out
