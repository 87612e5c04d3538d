"""Dataset folders in the two conventions users have: MSD and nnU-Net v2 raw.

MSD (Medical Segmentation Decathlon): ``dataset.json`` with ``modality`` (index -> name), ``labels``
(int -> name) and a ``training`` list of ``{"image", "label"}``; images may be 4D with channels last.

nnU-Net v2 raw: ``dataset.json`` with ``channel_names``, ``labels`` (name -> int) and
``file_ending``; ``imagesTr/<case>_<XXXX><ending>`` with one file per channel, ``labelsTr/<case><ending>``.
Both are read into one :class:`Dataset` of :class:`Case` records.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanseg.errors import LeansegError


@dataclass(frozen=True)
class Case:
    case_id: str
    images: tuple[Path, ...]  # one path (3D/4D) or one per channel
    label: Path | None

    def stamp(self) -> list[list[int]]:
        """Size and modification time (ns) of each of the case's files: what caches are keyed on, so that a
        replaced image or label is read again."""
        files = [*self.images, *([self.label] if self.label is not None else [])]
        return [[st.st_size, st.st_mtime_ns] for st in (Path(f).stat() for f in files)]


@dataclass
class Dataset:
    root: Path
    name: str
    layout: str  # "msd" | "nnunetv2"
    channel_names: list[str]
    labels: dict[int, str]  # class index -> name, 0 = background
    cases: list[Case]
    file_ending: str = ".nii.gz"
    extra: dict = field(default_factory=dict)
    test_cases: list[Case] = field(default_factory=list)  # nnU-Net's imagesTs/ (unlabelled), where the folder has one
    ignore_label: int | None = None  # nnU-Net's "ignore" label value: not annotated, left out of loss and metrics
    regions: list[tuple[int, ...]] | None = None  # nnU-Net's region-based labels: the label values each class covers
    regions_class_order: list[int] | None = None  # the value painted for each region, in order, when writing a label map

    @property
    def label_values(self) -> set[int]:
        """The values label files may hold (a region dataset's values are not its classes)."""
        values = {v for r in self.regions for v in r} | {0} if self.regions else set(self.labels)
        return values | ({self.ignore_label} if self.ignore_label is not None else set())

    @property
    def num_classes(self) -> int:
        """Number of output channels including background."""
        return max(self.labels) + 1

    @property
    def modality(self) -> str:
        """``CT`` if any channel is CT (the normalisation differs), else ``MRI``."""
        return "CT" if any(n.upper() == "CT" for n in self.channel_names) else "MRI"

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise LeansegError(f"Case '{case_id}' is not in {self.root / 'dataset.json'}.")


def load_dataset(root: Path | str, require_labels: bool = True) -> Dataset:
    """Read a dataset folder, detecting its layout from ``dataset.json``.

    Raises:
        LeansegError: if the folder, ``dataset.json`` or a listed file is missing or malformed.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not root.is_dir():
        raise LeansegError(f"Dataset folder {root} does not exist; pass the folder that holds dataset.json.")
    if not meta_path.is_file():
        raise LeansegError(f"{meta_path} is missing; a dataset folder needs an MSD or nnU-Net v2 dataset.json.")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LeansegError(f"{meta_path} is not valid JSON ({e}); fix the file.") from e
    if not isinstance(meta, dict) or "labels" not in meta:
        raise LeansegError(f"{meta_path} has no 'labels' entry; add the class names as in the MSD or nnU-Net v2 layout.")
    if "channel_names" in meta:
        ds = _load_nnunet(root, meta, meta_path)
    elif "modality" in meta:
        ds = _load_msd(root, meta, meta_path)
    else:
        raise LeansegError(f"{meta_path} has neither 'modality' (MSD) nor 'channel_names' (nnU-Net v2); add the one your layout uses.")
    if not ds.cases:
        raise LeansegError(f"{meta_path} lists no training cases; add them to 'training' or to imagesTr/.")
    for case in ds.cases:
        for p in case.images:
            if not p.is_file():
                raise LeansegError(f"Image {p} listed for case '{case.case_id}' is missing; add the file or remove the case.")
        if require_labels and (case.label is None or not case.label.is_file()):
            raise LeansegError(f"Label {case.label} of case '{case.case_id}' is missing; add it to labelsTr/.")
    return ds


def _int_labels(raw: dict, meta_path: Path, name_to_int: bool) -> dict[int, str]:
    try:
        labels = {int(v): str(k) for k, v in raw.items()} if name_to_int else {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError) as e:
        form = "name -> integer" if name_to_int else "integer -> name"
        raise LeansegError(f"{meta_path}: 'labels' must map {form}; fix the entry ({e}).") from e
    if 0 not in labels:
        raise LeansegError(f"{meta_path}: 'labels' has no background class 0; add it.")
    return dict(sorted(labels.items()))


def _load_msd(root: Path, meta: dict, meta_path: Path) -> Dataset:
    modality = meta["modality"]
    if not isinstance(modality, dict):
        raise LeansegError(f'{meta_path}: \'modality\' must map channel index -> name, e.g. {{"0": "MRI"}}.')
    channels = [str(modality[k]) for k in sorted(modality, key=int)]
    labels = _int_labels(meta["labels"], meta_path, name_to_int=False)
    training = meta.get("training")
    if not isinstance(training, list):
        raise LeansegError(f"{meta_path}: 'training' must be a list of {{'image', 'label'}} entries.")
    cases = []
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry:
            raise LeansegError(f"{meta_path}: training entry {i} needs an 'image' path.")
        img = (root / entry["image"]).resolve()
        lab = (root / entry["label"]).resolve() if entry.get("label") else None
        cases.append(Case(_strip_ending(img.name), (img,), lab))
    return Dataset(root, str(meta.get("name", root.name)), "msd", channels, labels, cases, ".nii.gz", meta)


def _load_nnunet(root: Path, meta: dict, meta_path: Path) -> Dataset:
    channels = [str(meta["channel_names"][k]) for k in sorted(meta["channel_names"], key=int)]
    raw = dict(meta["labels"])
    ignore = raw.pop("ignore", None)
    regions, order = _regions(raw, meta, meta_path)
    labels = {0: "background", **{i + 1: n for i, n in enumerate(k for k in raw if k != "background")}} if regions else None
    labels = labels or _int_labels(raw, meta_path, name_to_int=True)
    top = max(max(r) for r in regions) if regions else max(labels)
    if ignore is not None and (not isinstance(ignore, int) or ignore <= top):
        raise LeansegError(f"{meta_path}: the 'ignore' label must be an integer above every class (as nnU-Net asks), got {ignore!r}.")
    ending = meta.get("file_ending")
    if not ending:
        raise LeansegError(f"{meta_path}: nnU-Net v2 datasets need 'file_ending' (e.g. \".nii.gz\"); add it.")
    if "dataset" in meta:  # nnU-Net v2's explicit file list: {case: {"images": [...], "label": ...}}, paths from the folder
        cases = _listed_cases(root, meta["dataset"], len(channels), meta_path)
    else:
        images_dir = root / "imagesTr"
        if not images_dir.is_dir():
            raise LeansegError(f"{images_dir} is missing; nnU-Net v2 datasets keep images in imagesTr/ (or list them in 'dataset').")
        cases = [Case(cid, files, root / "labelsTr" / f"{cid}{ending}") for cid, files in _channel_files(images_dir, ending, len(channels))]
    ds = Dataset(
        root,
        str(meta.get("name", root.name)),
        "nnunetv2",
        channels,
        labels,
        cases,
        ending,
        meta,
        ignore_label=ignore,
        regions=regions,
        regions_class_order=order,
    )
    if (root / "imagesTs").is_dir():  # unlabelled test images, as nnU-Net keeps them
        ds.test_cases = [Case(cid, files, None) for cid, files in _channel_files(root / "imagesTs", ending, len(channels))]
    return ds


def _regions(raw: dict, meta: dict, meta_path: Path) -> tuple[list[tuple[int, ...]] | None, list[int] | None]:
    """nnU-Net v2's region-based labels: each class (but background) a list of label values, painted back in the order
    of ``regions_class_order``; (None, None) for plain labels."""
    if not any(isinstance(v, list) for v in raw.values()):
        return None, None
    try:
        regions = [tuple(int(x) for x in (v if isinstance(v, list) else [v])) for k, v in raw.items() if k != "background"]
        order = [int(x) for x in meta["regions_class_order"]]
    except (KeyError, TypeError, ValueError) as e:
        raise LeansegError(
            f"{meta_path}: region-based labels need integer lists and a 'regions_class_order' with one value per region ({e})."
        ) from None
    if raw.get("background") != 0 or len(order) != len(regions) or any(v not in r for v, r in zip(order, regions)):
        raise LeansegError(
            f"{meta_path}: region-based labels need background 0 and 'regions_class_order' listing, per region, "
            "a value it covers (nnU-Net's rule)."
        )
    return regions, order


def _channel_files(folder: Path, ending: str, num_channels: int) -> list[tuple[str, tuple[Path, ...]]]:
    """nnU-Net's ``<case>_<XXXX><ending>`` files of a folder, grouped per case; a case missing a channel is refused."""
    pattern = re.compile(rf"^(.*)_(\d{{4}}){re.escape(ending)}$")
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        m = pattern.match(p.name)
        if m:
            found.setdefault(m.group(1), {})[int(m.group(2))] = p
    out = []
    for cid, chans in sorted(found.items()):
        missing = [c for c in range(num_channels) if c not in chans]
        if missing:
            want = folder / f"{cid}_{missing[0]:04d}{ending}"
            raise LeansegError(f"Channel file {want} is missing for case '{cid}'; add it or remove the case's other files.")
        out.append((cid, tuple(chans[c] for c in range(num_channels))))
    return out


def _listed_cases(root: Path, listing: Any, num_channels: int, meta_path: Path) -> list[Case]:
    if not isinstance(listing, dict):
        raise LeansegError(f"{meta_path}: 'dataset' must map case id -> {{'images': [...], 'label': ...}}.")
    cases = []
    for cid, entry in sorted(listing.items()):
        images = entry.get("images") if isinstance(entry, dict) else None
        if not isinstance(images, list) or len(images) != num_channels:
            raise LeansegError(f"{meta_path}: 'dataset' entry '{cid}' needs 'images', one file per channel ({num_channels}).")
        label = entry.get("label")
        cases.append(Case(str(cid), tuple((root / f).resolve() for f in images), (root / label).resolve() if label else None))
    return cases


def _strip_ending(name: str) -> str:
    for end in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"):
        if name.endswith(end):
            return name[: -len(end)]
    return name
