"""DICOM series in, labels out on the series' own grid; DICOM-SEG referencing the series (a real scanner series)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leanseg.data.io import Volume, dicom_series_files, is_dicom_series, read_image, read_label
from leanseg.errors import LeansegError
from tests.conftest import SHARED_DATA

SERIES = SHARED_DATA / "TotalSegmentator_example" / "example_ct_dicom"
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def series() -> Path:
    if not SERIES.is_dir():
        pytest.skip(f"{SERIES} is not here")
    return SERIES


def test_the_series_is_read_with_simpleitks_geometry(series: Path) -> None:
    import SimpleITK as sitk

    assert is_dicom_series(series) and not is_dicom_series(series.parent)
    ref = sitk.ReadImage(dicom_series_files(series))
    vol = read_image([series])
    assert vol.shape == ref.GetSize() == (512, 512, 20)
    assert np.allclose(vol.spacing, ref.GetSpacing())
    # voxel (i, j, k) lies where SimpleITK puts it (LPS there, RAS here)
    for idx in [(0, 0, 0), (511, 0, 19), (17, 300, 9)]:
        lps = np.asarray(ref.TransformIndexToPhysicalPoint(idx))
        assert np.allclose(vol.affine @ np.array([*idx, 1.0]), [-lps[0], -lps[1], lps[2], 1.0], atol=1e-4)
    # TotalSegmentator's NIfTI of the same series (dcm2niix) is the same grid, rows stored the other way round
    nifti = read_label(series.parent / "example_seg_dicom.nii.gz")
    corner = np.linalg.inv(nifti.affine) @ vol.affine @ np.array([0, 0, 0, 1.0])
    assert np.allclose(corner[:3], [0, 511, 0], atol=1e-3)
    assert np.allclose(np.abs(np.linalg.inv(nifti.affine)[:3, :3] @ vol.affine[:3, :3]), np.eye(3), atol=1e-6)


def test_dicom_seg_references_the_series_and_holds_the_label_slice_by_slice(series: Path, tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    from leanseg.data.dicom import write_dicom_seg

    vol = read_image([series])
    lab = np.zeros(vol.shape, np.uint8)
    lab[200:300, 180:260, 4:9] = 1
    lab[100:140, 90:150, 0:2] = 3  # classes 1 and 3: segment numbers 1 and 2
    with pytest.warns(UserWarning, match="no StudyInstanceUID"):  # this example series is anonymised
        out = write_dicom_seg(tmp_path / "case.dcm", Volume(lab, vol.affine), series, {0: "bg", 1: "liver", 3: "spleen"})
    seg = hd.seg.segread(out)
    files = dicom_series_files(series)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for f in files]
    assert seg.number_of_segments == 2 and [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
    got = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # (slice, row, column), in the series' order
    want = np.moveaxis(lab, [0, 1, 2], [2, 1, 0])
    assert np.array_equal(got == 1, want == 1) and np.array_equal(got == 2, want == 3)
    with pytest.raises(LeansegError, match="not that of the DICOM series"):
        write_dicom_seg(tmp_path / "bad.dcm", Volume(lab[:, :, :10], vol.affine), series, {0: "bg", 1: "liver"})
    assert not (tmp_path / "bad.dcm").exists()


def test_predict_a_dicom_series_from_the_command_line(series: Path, trained_run: Path, tmp_path: Path) -> None:
    import warnings

    from typer.testing import CliRunner

    from leanseg.cli import app

    r = CliRunner().invoke(app, ["predict", "-m", str(trained_run), "-i", str(series), "-o", str(tmp_path / "nii"), "--mode", "whole"])
    assert r.exit_code == 0, r.output
    label = read_label(tmp_path / "nii" / "example_ct_dicom.nii.gz")
    image = read_image([series])
    assert label.shape == image.shape and np.allclose(label.affine, image.affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        r = CliRunner().invoke(
            app,
            ["predict", "-m", str(trained_run), "-i", str(series), "-o", str(tmp_path / "seg"), "--format", "dicom-seg", "--mode", "whole"],
        )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "seg" / "example_ct_dicom.dcm").is_file()
    nii = sorted((SHARED_DATA / "TotalSegmentator_example").glob("example_ct_sm.nii.gz"))
    r = CliRunner().invoke(app, ["predict", "-m", str(trained_run), "-i", str(nii[0]), "-o", str(tmp_path / "x"), "--format", "dicom-seg"])
    assert r.exit_code == 2 and "needs DICOM series as input" in r.output
