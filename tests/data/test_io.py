from pathlib import Path

import numpy as np
import pytest

from leanseg.data.io import read_image, read_label, write_label
from leanseg.errors import LeansegError
from tests.conftest import write_nifti

AFFINE = np.array([[-0.8, 0, 0, 10.0], [0, 0.8, 0, -20.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])


def test_nifti_label_round_trip_keeps_geometry(tmp_path: Path) -> None:
    lab = np.random.default_rng(0).integers(0, 3, (7, 8, 9)).astype(np.uint8)
    write_label(tmp_path / "l.nii.gz", lab, AFFINE)
    back = read_label(tmp_path / "l.nii.gz")
    assert np.array_equal(back.array, lab)
    assert np.allclose(back.affine, AFFINE)
    assert back.spacing == pytest.approx((0.8, 0.8, 2.5))


@pytest.mark.parametrize("ending", [".mha", ".nrrd"])
def test_itk_formats_round_trip_in_ras(tmp_path: Path, ending: str) -> None:
    lab = np.zeros((6, 7, 8), np.uint8)
    lab[1, 2, 3] = 2
    write_label(tmp_path / f"l{ending}", lab, AFFINE)
    back = read_label(tmp_path / f"l{ending}")
    assert np.array_equal(back.array, lab)  # same (x, y, z) indexing as nibabel
    assert np.allclose(back.affine, AFFINE, atol=1e-5)


def test_itk_and_nifti_agree_on_world_coordinates(tmp_path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.Image(5, 6, 7, sitk.sitkFloat32)
    img.SetSpacing((1.0, 2.0, 3.0))
    img.SetOrigin((4.0, 5.0, 6.0))
    img[1, 2, 3] = 5.0  # ITK index (x, y, z)
    sitk.WriteImage(img, str(tmp_path / "a.mha"))
    vol = read_image(tmp_path / "a.mha", check_values=False)
    assert vol.array[0, 1, 2, 3] == 5.0
    world_ras = vol.affine @ np.array([1, 2, 3, 1.0])
    lps = img.TransformIndexToPhysicalPoint((1, 2, 3))
    assert np.allclose(world_ras[:3], [-lps[0], -lps[1], lps[2]])


def test_msd_4d_image_becomes_channel_first(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).random((5, 6, 7, 2)).astype(np.float32)
    write_nifti(tmp_path / "x.nii.gz", arr)
    vol = read_image(tmp_path / "x.nii.gz")
    assert vol.array.shape == (2, 5, 6, 7)
    assert np.array_equal(vol.array[1], arr[..., 1])


def test_channel_files_must_share_a_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = write_nifti(tmp_path / "c_0000.nii.gz", rng.random((5, 5, 5)).astype(np.float32))
    b = write_nifti(tmp_path / "c_0001.nii.gz", rng.random((5, 5, 6)).astype(np.float32))
    with pytest.raises(LeansegError, match="c_0001.nii.gz has shape"):
        read_image([a, b])
    c = write_nifti(tmp_path / "c_0002.nii.gz", rng.random((5, 5, 5)).astype(np.float32), np.diag([2.0, 1, 1, 1]))
    with pytest.raises(LeansegError, match="c_0002.nii.gz has another affine"):
        read_image([a, c])


def test_nan_and_constant_images_are_refused(tmp_path: Path) -> None:
    arr = np.ones((4, 4, 4), np.float32)
    write_nifti(tmp_path / "const.nii.gz", arr)
    with pytest.raises(LeansegError, match="const.nii.gz is constant"):
        read_image(tmp_path / "const.nii.gz")
    arr = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)
    arr[1, 1, 1] = np.nan
    write_nifti(tmp_path / "nan.nii.gz", arr)
    with pytest.raises(LeansegError, match="nan.nii.gz contains NaN"):
        read_image(tmp_path / "nan.nii.gz")


def test_truncated_nifti_names_the_file(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "t.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(LeansegError, match="t.nii.gz .*damaged or truncated"):
        read_image(p)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(LeansegError, match="junk.nii.gz"):
        read_image(tmp_path / "junk.nii.gz")


def test_non_integer_label_is_refused(tmp_path: Path) -> None:
    write_nifti(tmp_path / "l.nii.gz", np.full((3, 3, 3), 0.5, np.float32))
    with pytest.raises(LeansegError, match="non-integer"):
        read_label(tmp_path / "l.nii.gz")


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_label(tmp_path / "x.nii.gz", np.zeros((3, 3, 3), np.uint8), np.eye(3))  # a 3x3 affine is invalid
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_a_header_claiming_more_voxels_than_there_are_is_refused_before_reading(tmp_path: Path, name: str) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header.set_data_shape((10000, 10000, 10000))  # the header lies: the file holds 64 voxels
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(path))
    raw = path.read_bytes() if name.endswith(".nii") else None
    if raw is not None:  # patch the shape of an uncompressed file in place: a tiny file whose header claims 10000^3
        path.write_bytes(img.header.binaryblock + raw[348:])
    else:
        import gzip

        body = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(img.header.binaryblock + body[348:]))
    with pytest.raises(LeansegError, match=r"header claims 10000x10000x10000 voxels"):
        read_image(path)


@pytest.mark.parametrize("affine", [np.zeros((4, 4)), np.full((4, 4), np.nan), np.diag([np.inf, 1, 1, 1])], ids=["zero", "nan", "inf"])
def test_an_unusable_affine_is_one_sentence(tmp_path: Path, affine: np.ndarray) -> None:
    import nibabel as nib

    path = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).integers(0, 3, (6, 6, 6)).astype(np.float32), np.eye(4)), str(path))
    hdr = nib.load(str(path)).header.copy()  # nibabel will not save such an affine: the header is patched in place
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = affine[0], affine[1], affine[2]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    path.write_bytes(hdr.binaryblock + path.read_bytes()[348:])
    for read in (read_image, read_label):
        with pytest.raises(LeansegError, match=r"a.nii has an unusable affine .* export it again"):
            read(path)
