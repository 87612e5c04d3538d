"""Seeded synthetic phantoms written as an MSD dataset folder: the demo's and the tests' default.

Each volume holds a textured background (smoothed noise under a smooth bias field, like an MRI),
one or two ellipsoid structures of random size, position and orientation (class 1) and a few small
spherical lesions (class 2), some inside the structure and some outside, with their own intensity
and texture. Sizes vary from case to case so that planning and padding are exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from leanseg.data.io import write_image, write_label

LABELS = {0: "background", 1: "structure", 2: "lesion"}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / (n.std() + 1e-8)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def make_phantom(shape: tuple[int, int, int], rng: np.random.Generator, num_lesions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One (image float32, label uint8) pair of ``shape`` (x, y, z)."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), axis=-1)
    image = 100 + 10 * _smooth_noise(rng, shape, 2.0) + 10 * _smooth_noise(rng, shape, 12.0)
    label = np.zeros(shape, dtype=np.uint8)
    dims = np.asarray(shape, dtype=np.float32)
    for _ in range(rng.integers(1, 3)):
        centre = dims * rng.uniform(0.35, 0.65, 3)
        radii = dims * rng.uniform(0.12, 0.24, 3)
        local = (grid - centre) @ _rotation(rng)
        inside = ((local / radii) ** 2).sum(-1) <= 1.0
        label[inside] = 1
    texture = 8 * _smooth_noise(rng, shape, 1.0)
    image = np.where(label == 1, 170 + texture, image)
    structure = np.argwhere(label == 1)
    for i in range(num_lesions):
        r = rng.uniform(2.0, 4.0)
        if i % 2 == 0 and len(structure):
            centre = structure[rng.integers(len(structure))].astype(np.float32)
        else:
            centre = rng.uniform(r + 2, dims - r - 2)
        inside = ((grid - centre) ** 2).sum(-1) <= r * r
        label[inside] = 2
        image = np.where(inside, 230 + 6 * _smooth_noise(rng, shape, 0.7), image)
    bias = np.exp(0.1 * _smooth_noise(rng, shape, 20.0))
    image = image * bias + rng.normal(0, 6, shape)
    image = ndimage.gaussian_filter(image, 0.6)
    return image.astype(np.float32), label


def write_msd_json(
    out: Path, name: str, description: str, modality: str | list[str], labels: dict[int, str], training: list[dict[str, str]]
) -> None:
    """The ``dataset.json`` of an MSD folder whose ``training`` entries are already written; ``modality``: one name,
    or one per channel."""
    meta = {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "modality": {str(i): m for i, m in enumerate([modality] if isinstance(modality, str) else modality)},
        "labels": {str(k): v for k, v in labels.items()},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=1))


def generate_phantom_dataset(
    out_dir: Path | str,
    num_cases: int = 24,
    seed: int = 0,
    sizes: tuple[tuple[int, int, int], ...] = ((40, 44, 36), (44, 44, 40), (40, 48, 36), (48, 48, 40)),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Path:
    """Write ``num_cases`` phantoms as an MSD folder (``dataset.json``, ``imagesTr``, ``labelsTr``)."""
    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])
    training = []
    for i in range(num_cases):
        shape = sizes[i % len(sizes)]
        image, label = make_phantom(shape, np.random.default_rng(rng.integers(2**32)))
        name = f"phantom_{i:03d}.nii.gz"
        write_image(out / "imagesTr" / name, image, affine)
        write_label(out / "labelsTr" / name, label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    write_msd_json(out, "Phantoms", f"leanseg synthetic phantoms (seed {seed})", "MRI", LABELS, training)
    return out
