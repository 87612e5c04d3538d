"""DICOM-SEG output: a label map on a DICOM series' own grid, written as a Segmentation object (highdicom) that
references the series it was predicted from, so that a PACS viewer shows it over those images.

The label's grid is the one :func:`leanseg.data.io.read_image` gave the series (SimpleITK's series reader): its z
index follows :func:`leanseg.data.io.dicom_series_files`, so frame k of the object lies on that list's slice k.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leanseg.data.io import Volume, dicom_series_files
from leanseg.errors import LeansegError
from leanseg.utils import atomic_path


def write_dicom_seg(path: Path | str, label: Volume, series: Path | str, labels: dict[int, str], model_name: str = "leanseg") -> Path:
    """Write ``label`` (X, Y, Z on the series' grid) as a binary DICOM-SEG with one segment per foreground class."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from leanseg import __version__

    source = _with_uids([pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_series_files(series)], Path(series))
    frames = np.moveaxis(label.array, [0, 1, 2], [2, 1, 0])  # (x, y, z) -> (slice, row, column), as SimpleITK read it
    if frames.shape != (len(source), int(source[0].Rows), int(source[0].Columns)):
        raise LeansegError(f"The label's grid {label.shape} is not that of the DICOM series in {series}; predict on the series itself.")
    classes = [k for k in sorted(labels) if k != 0]
    numbered = np.zeros(frames.shape, np.uint8)  # segment numbers run 1..n over the declared foreground classes
    for i, k in enumerate(classes, start=1):
        numbered[frames == k] = i
    algorithm = hd.AlgorithmIdentificationSequence(name="leanseg", version=__version__, family=codes.cid7162.ArtificialIntelligence)
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=labels[k][:64],
            segmented_property_category=codes.cid7150.Tissue,
            segmented_property_type=codes.cid7150.Tissue,  # generic: a class name is no coded anatomy
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for i, k in enumerate(classes, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=numbered,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="leanseg",
        manufacturer_model_name=model_name[:64],
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"leanseg {model_name}"[:64],
        omit_empty_frames=False,
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return path


def _with_uids(source: list, series: Path) -> list:
    """Fill identifiers an anonymiser blanked: the SOP class and instance from each file's meta header (the same values);
    a blank study or series UID gets one derived from the frame of reference, with a warning, since a viewer cannot
    then link the segmentation to the images."""
    import uuid
    import warnings

    import highdicom as hd

    for ds in source:
        if not ds.get("SOPClassUID"):
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        if not ds.get("SOPInstanceUID"):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    blank = [k for k in ("StudyInstanceUID", "SeriesInstanceUID") if not source[0].get(k)]
    if blank:
        warnings.warn(
            f"The DICOM series in {series} has no {' or '.join(blank)} (anonymised?); the segmentation references generated "
            "ones, so a viewer will not link it to the images.",
            stacklevel=3,
        )
        seed = str(source[0].get("FrameOfReferenceUID") or series.resolve())
        for k in blank:
            uid = hd.UID.from_uuid(str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}/{k}")))
            for ds in source:
                setattr(ds, k, uid)
    return source
