"""Seeded synthetic chest CTs with lung nodules (LUNA16-like), written as an MSD dataset folder.

Large volumes with small targets, for the LowRes two-stage model's timing and FROC analysis: a body
of soft tissue (about 40 HU) in air (-1000 HU), two lungs (about -850 HU) with vessel-like branching
texture, a spine (about 700 HU), and nodules placed after LUNA16's reference standard: a Poisson
number per scan (mean 1.34 by default, LUNA16's 1186 nodules in 888 scans), log-normal diameters
from 3 to 32 mm (median 6.5 mm, so most are under 10 mm), lobulated; solid (0-80 HU), part-solid or
ground-glass (-650 to -400 HU); isolated, touching a vessel, or flattened on the pleura. Gaussian
noise (25 HU) and a slight blur stand in for the scanner. Label 1: nodule. Images are written as
int16 Hounsfield units; ``nodules.json`` lists every nodule, and ``chest_statistics`` sums it up in
LUNA16's terms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from leanseg.data.io import write_image, write_label
from leanseg.data.synthetic import write_msd_json

LABELS = {0: "background", 1: "nodule"}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return n / (n.std() + 1e-8)


# LUNA16's reference standard (luna16.grand-challenge.org/Data): 888 CT scans, 1186 nodules of at least 3 mm
# accepted by at least 3 of 4 radiologists. The largest diameter, about 32 mm, is as quoted from its annotations.csv
# (not checked here: the file is not on this machine); most nodules are under 10 mm.
LUNA16 = {"scans": 888, "nodules": 1186, "nodules_per_scan": 1186 / 888, "min_diameter_mm": 3.0, "max_diameter_mm": 32.3}
SIZE_BINS_MM = ((3.0, 5.0), (5.0, 10.0), (10.0, 30.0))  # the recall-by-size bins; 30-32 mm counts in the last
ATTACHMENTS = {"isolated": 0.6, "juxta-vascular": 0.2, "juxta-pleural": 0.2}
TEXTURES = {"solid": 0.75, "part-solid": 0.1, "ground-glass": 0.15}


def sample_diameter(rng: np.random.Generator, median_mm: float, bounds_mm: tuple[float, float], sigma: float = 0.5) -> float:
    """A log-normal diameter (``median_mm``, log-sd ``sigma``) drawn again until it falls inside ``bounds_mm``."""
    while True:
        d = float(rng.lognormal(np.log(median_mm), sigma))
        if bounds_mm[0] <= d <= bounds_mm[1]:
            return d


def _pick(rng: np.random.Generator, shares: dict[str, float]) -> str:
    names = list(shares)
    return names[int(rng.choice(len(names), p=np.asarray([shares[n] for n in names]) / sum(shares.values())))]


def _anatomy(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image in HU, lung mask, vessel mask): body, two lungs with vessel-like texture, a spine."""
    X, Y, Z = shape
    x, y, z = (np.arange(n, dtype=np.float32) for n in shape)
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    body = np.broadcast_to(((x - X / 2) / (0.46 * X)) ** 2 + ((y - Y / 2) / (0.36 * Y)) ** 2 <= 1.0, shape)
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
    image[np.broadcast_to(((x - X / 2) / (0.06 * X)) ** 2 + ((y - 0.8 * Y) / (0.06 * Y)) ** 2 <= 1.0, shape)] = 700
    return image, lungs, vessels


def _centres(attachment: str, r: float, depth: np.ndarray, vessel_gap: np.ndarray) -> np.ndarray:
    """Flat indices where a nodule of radius ``r`` mm with this attachment may be centred."""
    if attachment == "juxta-pleural":  # its edge reaches the pleura
        ok = (depth > 0.5 * r) & (depth <= r)
    elif attachment == "juxta-vascular":  # its edge reaches a vessel, away from the pleura
        ok = (depth > r + 2) & (vessel_gap > 0.5 * r) & (vessel_gap <= r)
    else:
        ok = depth > r + 2
    return np.flatnonzero(ok)


def make_chest(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    nodules_per_scan: float = LUNA16["nodules_per_scan"],
    diameter_mm: tuple[float, float] = (3.0, 32.0),
    median_diameter_mm: float = 6.5,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """One (image int16 HU, label uint8, nodule list) of ``shape`` (x, y, z) voxels.

    The number of nodules is Poisson with mean ``nodules_per_scan`` (LUNA16's 1.34 by default); diameters are
    log-normal around ``median_diameter_mm`` inside ``diameter_mm``; each nodule is isolated, juxta-vascular or
    juxta-pleural and solid, part-solid or ground-glass (``ATTACHMENTS``, ``TEXTURES``)."""
    image, lungs, vessels = _anatomy(shape, rng)
    sp = np.asarray(spacing, dtype=np.float32)
    depth = ndimage.distance_transform_edt(lungs, sampling=sp)  # mm to the pleura
    vessel_gap = ndimage.distance_transform_edt(~vessels, sampling=sp)  # mm to the nearest vessel
    label = np.zeros(shape, np.uint8)
    nodules: list[dict[str, Any]] = []
    target, tries = int(rng.poisson(nodules_per_scan)), 0
    while len(nodules) < target and tries < 50 * max(target, 1):
        tries += 1
        d, attachment = sample_diameter(rng, median_diameter_mm, diameter_mm), _pick(rng, ATTACHMENTS)
        where = _centres(attachment, d / 2, depth, vessel_gap)
        if not len(where):
            continue
        centre = np.array(np.unravel_index(where[rng.integers(len(where))], shape))
        nodule = _place(image, label, lungs, vessels, centre, d, attachment, _pick(rng, TEXTURES), sp, rng)
        if nodule is not None:
            nodules.append(nodule)
    image = ndimage.gaussian_filter(image, 0.7) + rng.normal(0, 25, shape).astype(np.float32)
    return np.clip(image, -1024, 3071).astype(np.int16), label, nodules


def _place(
    image: np.ndarray,
    label: np.ndarray,
    lungs: np.ndarray,
    vessels: np.ndarray,
    centre: np.ndarray,
    d: float,
    attachment: str,
    texture: str,
    sp: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, Any] | None:
    """Paint one lobulated nodule into ``image`` and ``label`` (in place); None where it would touch another."""
    r_vox = d / 2 / sp
    lo = np.maximum(np.floor(centre - 1.3 * r_vox - 3).astype(int), 0)
    hi = np.minimum(np.ceil(centre + 1.3 * r_vox + 4).astype(int), label.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    g = np.ogrid[box]
    dist = np.sqrt(sum(((g[i] - centre[i]) * sp[i]) ** 2 for i in range(3)))
    wobble = 1 + 0.12 * _smooth_noise(rng, dist.shape, 2.0) if min(dist.shape) > 4 else 1.0
    obj = (dist <= (d / 2) * wobble) & lungs[box]  # a juxta-pleural nodule is flattened on the pleura
    if not obj.any() or label[box][ndimage.binary_dilation(obj, iterations=2)].any():
        return None  # nodules stay apart from each other
    region = image[box]
    if attachment == "isolated":  # vessels around it are pushed aside
        shell = ndimage.binary_dilation(obj, iterations=2) & ~obj & vessels[box]
        region[shell] = -850 + 25 * rng.standard_normal(int(shell.sum()))
    solid_hu = rng.uniform(0, 80) + 20 * rng.standard_normal(obj.shape)
    glass_hu = rng.uniform(-650, -400) + 20 * rng.standard_normal(obj.shape)
    core = dist <= (d / 4) * wobble if texture == "part-solid" else np.zeros_like(obj)
    region[obj] = np.where(core, solid_hu, glass_hu if texture != "solid" else solid_hu)[obj]
    label[box][obj] = 1
    x, y, z = (float(c) for c in centre)
    return {"x": x, "y": y, "z": z, "diameter_mm": d, "texture": texture, "attachment": attachment, "voxels": int(obj.sum())}


def chest_statistics(nodules: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What a ``nodules.json`` holds, in the terms LUNA16 publishes: scans, nodules, nodules per scan, diameters
    (quantiles, shares by ``SIZE_BINS_MM``), and the shares of each attachment and texture."""
    from leanseg.objects import size_bands

    found = [n for scan in nodules.values() for n in scan]
    d = np.asarray([n["diameter_mm"] for n in found], dtype=float)
    bins = {band: float(inside.mean()) if len(d) else 0.0 for band, inside in size_bands(d, SIZE_BINS_MM).items()}
    q = np.quantile(d, [0.0, 0.25, 0.5, 0.75, 1.0]).tolist() if len(d) else [float("nan")] * 5
    share = {
        key: {v: float(np.mean([n.get(key) == v for n in found])) if found else 0.0 for v in names}
        for key, names in (("attachment", ATTACHMENTS), ("texture", TEXTURES))
    }
    return {
        "scans": len(nodules),
        "nodules": len(found),
        "nodules_per_scan": len(found) / max(len(nodules), 1),
        "scans_without_nodules": sum(not scan for scan in nodules.values()),
        "diameter_mm": dict(zip(("min", "q25", "median", "q75", "max"), q)),
        "diameter_mean_mm": float(d.mean()) if len(d) else float("nan"),
        "size_bins": bins,
        **share,
    }


def generate_chest_dataset(
    out_dir: Path | str,
    num_cases: int = 8,
    seed: int = 0,
    shape: tuple[int, int, int] = (300, 300, 200),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.5),
    progress: bool = False,
    nodules_per_scan: float = LUNA16["nodules_per_scan"],
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
        image, label, nodules = make_chest(shape, spacing, np.random.default_rng(rng.integers(2**32)), nodules_per_scan)
        name = f"chest_{i:03d}.nii.gz"
        write_image(out / "imagesTr" / name, image, affine)
        write_label(out / "labelsTr" / name, label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        all_nodules[f"chest_{i:03d}"] = nodules
    (out / "nodules.json").write_text(json.dumps(all_nodules, indent=1))
    write_msd_json(
        out,
        "SyntheticChest",
        f"leanseg synthetic LUNA16-like chest CTs, {nodules_per_scan:g} nodules per scan on average (seed {seed})",
        "CT",
        LABELS,
        training,
    )
    return out
