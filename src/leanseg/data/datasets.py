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
from leanseg.names import check_case_id, check_unique


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
    except RecursionError:
        raise LeansegError(f"{meta_path} nests its values too deeply to be a dataset description; fix the file.") from None
    if not isinstance(meta, dict) or "labels" not in meta:
        raise LeansegError(f"{meta_path} has no 'labels' entry; add the class names as in the MSD or nnU-Net v2 layout.")
    if not isinstance(meta["labels"], dict):
        raise LeansegError(f"{meta_path}: 'labels' must be a mapping of the classes, got {type(meta['labels']).__name__}; fix the entry.")
    if "channel_names" in meta:
        ds = _load_nnunet(root, meta, meta_path)
    elif "modality" in meta:
        ds = _load_msd(root, meta, meta_path)
    else:
        raise LeansegError(f"{meta_path} has neither 'modality' (MSD) nor 'channel_names' (nnU-Net v2); add the one your layout uses.")
    if not ds.cases:
        raise LeansegError(f"{meta_path} lists no training cases; add them to 'training' or to imagesTr/.")
    for cases in (ds.cases, ds.test_cases):  # every id names cache and output files: checked where it is read
        for case in cases:
            check_case_id(case.case_id, meta_path)
        check_unique(((c.case_id, c.images[0]) for c in cases), meta_path)
    for case in ds.cases:
        for p in case.images:
            if not p.is_file():
                raise LeansegError(f"Image {p} listed for case '{case.case_id}' is missing; add the file or remove the case.")
        if require_labels and (case.label is None or not case.label.is_file()):
            raise LeansegError(f"Label {case.label} of case '{case.case_id}' is missing; add it to labelsTr/.")
    return ds


def _int_labels(raw: dict, meta_path: Path, name_to_int: bool) -> dict[int, str]:
    try:
        labels = {_whole(v): str(k) for k, v in raw.items()} if name_to_int else {_whole(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError, OverflowError) as e:
        form = "name -> integer" if name_to_int else "integer -> name"
        raise LeansegError(f"{meta_path}: 'labels' must map {form}; fix the entry ({e}).") from e
    if 0 not in labels:
        raise LeansegError(f"{meta_path}: 'labels' has no background class 0; add it.")
    return dict(sorted(labels.items()))


def _whole(value: Any) -> int:
    """A label or channel index from JSON: an integer, or a string of one (``"1"``); anything else is a ValueError."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def _channels(mapping: Any, key: str, meta_path: Path) -> list[str]:
    """Channel names from MSD's ``modality`` or nnU-Net's ``channel_names``: index -> name, indices 0..C-1."""
    try:
        if not isinstance(mapping, dict) or not mapping:
            raise ValueError("not a mapping")
        order = sorted(mapping, key=_whole)
        if [_whole(k) for k in order] != list(range(len(order))):
            raise ValueError("indices are not 0..C-1")
    except ValueError as e:
        raise LeansegError(f'{meta_path}: \'{key}\' must map channel index 0, 1, ... -> name, e.g. {{"0": "MRI"}} ({e}).') from None
    return [str(mapping[k]) for k in order]


def _relative_file(value: Any, meta_path: Path, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise LeansegError(f"{meta_path}: {what} must be a file path (a string), got {value!r}; fix the entry.")
    return value


def _load_msd(root: Path, meta: dict, meta_path: Path) -> Dataset:
    channels = _channels(meta["modality"], "modality", meta_path)
    labels = _int_labels(meta["labels"], meta_path, name_to_int=False)
    training = meta.get("training")
    if not isinstance(training, list):
        raise LeansegError(f"{meta_path}: 'training' must be a list of {{'image', 'label'}} entries.")
    cases = []
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry:
            raise LeansegError(f"{meta_path}: training entry {i} needs an 'image' path.")
        listed = root / _relative_file(entry["image"], meta_path, f"training entry {i}'s 'image'")
        label = entry.get("label")
        lab = (root / _relative_file(label, meta_path, f"training entry {i}'s 'label'")).resolve() if label is not None else None
        # the case is named as listed: a symlink keeps its own name, not its target's
        cases.append(Case(_strip_ending(listed.name), (listed.resolve(),), lab))
    return Dataset(root, str(meta.get("name", root.name)), "msd", channels, labels, cases, ".nii.gz", meta)


def _load_nnunet(root: Path, meta: dict, meta_path: Path) -> Dataset:
    channels = _channels(meta["channel_names"], "channel_names", meta_path)
    raw = dict(meta["labels"])
    ignore = raw.pop("ignore", None)
    regions, order = _regions(raw, meta, meta_path)
    labels = {0: "background", **{i + 1: n for i, n in enumerate(k for k in raw if k != "background")}} if regions else None
    labels = labels or _int_labels(raw, meta_path, name_to_int=True)
    top = max(max(r) for r in regions) if regions else max(labels)
    if ignore is not None and (not isinstance(ignore, int) or ignore <= top):
        raise LeansegError(f"{meta_path}: the 'ignore' label must be an integer above every class (as nnU-Net asks), got {ignore!r}.")
    ending = meta.get("file_ending")
    if not ending or not isinstance(ending, str):
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
    except (KeyError, TypeError, ValueError, OverflowError) as e:
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
        files = tuple((root / _relative_file(f, meta_path, f"'dataset' entry '{cid}''s image")).resolve() for f in images)
        label = entry.get("label")
        lab = (root / _relative_file(label, meta_path, f"'dataset' entry '{cid}''s 'label'")).resolve() if label is not None else None
        cases.append(Case(cid, files, lab))
    return cases


def _strip_ending(name: str) -> str:
    for end in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"):
        if name.endswith(end):
            return name[: -len(end)]
    return name
