"""Image I/O that keeps geometry: NIfTI through nibabel, .mha/.mhd/.nrrd and DICOM series folders through SimpleITK.

Every reader returns the voxel array together with its 4x4 voxel-to-RAS affine (millimetres), and
every writer takes them back, so nothing downstream re-reads a file to recover its geometry
(DESIGN.md, example 6). Arrays are indexed (x, y, z) like nibabel; images are channel-first.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.filebasedimages import ImageFileError

from leanseg.errors import LeansegError
from leanseg.utils import atomic_path

NIFTI_ENDINGS = (".nii.gz", ".nii")
ITK_ENDINGS = (".mha", ".mhd", ".nrrd", ".nhdr")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """An array with its geometry. ``array`` is (C, X, Y, Z) for images and (X, Y, Z) for labels."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.array.shape[-3:])  # type: ignore[return-value]


def file_ending(path: Path | str) -> str:
    name = str(path).lower()
    for end in NIFTI_ENDINGS + ITK_ENDINGS:
        if name.endswith(end):
            return end
    return Path(name).suffix


def is_dicom_series(path: Path | str) -> bool:
    """A folder whose files include DICOM ones ("DICM" at byte 128): read as one series."""
    path = Path(path)
    if not path.is_dir():
        return False
    for f in sorted(path.iterdir())[:20]:
        if f.is_file():
            with open(f, "rb") as fh:
                if fh.read(132)[128:] == b"DICM":
                    return True
    return False


def dicom_series_files(folder: Path | str) -> list[str]:
    """The files of a folder's one DICOM series, in SimpleITK's slice order (the order of the array's z index)."""
    import SimpleITK as sitk

    folder = Path(folder)
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise LeansegError(f"{folder} holds no readable DICOM series; pass the folder of one series' slices.")
    if len(ids) > 1:
        raise LeansegError(f"{folder} holds {len(ids)} DICOM series; pass a folder with one series (one folder per series).")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))


def _from_sitk(img: object) -> tuple[np.ndarray, np.ndarray]:
    """A SimpleITK image as (array indexed x,y,z[,c], voxel-to-RAS affine)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)  # (z, y, x[, c])
    arr = np.moveaxis(arr, [0, 1, 2], [2, 1, 0]) if arr.ndim >= 3 else arr
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)  # type: ignore[attr-defined]
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing())[None, :]  # type: ignore[attr-defined]
    lps[:3, 3] = img.GetOrigin()  # type: ignore[attr-defined]
    return arr, LPS_TO_RAS @ lps


def _read_any(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (array indexed x,y,z[,c], affine RAS) for one file or one DICOM series folder."""
    if is_dicom_series(path):
        import SimpleITK as sitk

        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(dicom_series_files(path))
        try:
            return _from_sitk(reader.Execute())
        except RuntimeError as e:
            raise LeansegError(
                f"Cannot read the DICOM series in {path} ({str(e).splitlines()[0]}); check that its slices are complete."
            ) from e
    if not path.is_file():
        raise LeansegError(f"Image file {path} does not exist; check the dataset folder or the path you passed.")
    end = file_ending(path)
    try:
        if end in NIFTI_ENDINGS:
            import nibabel as nib

            img = nib.load(str(path))  # the header only: its shape is checked before any voxel is read
            _check_size(path, img.shape, img.get_data_dtype().itemsize, None if end == ".nii.gz" else int(img.header["vox_offset"]))
            arr = np.asarray(img.dataobj)
            affine = np.asarray(img.affine, dtype=np.float64)
        elif end in ITK_ENDINGS:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            _check_size(path, (*reader.GetSize(), reader.GetNumberOfComponents()), 8, None)
            arr, affine = _from_sitk(reader.Execute())
        else:
            raise LeansegError(f"Cannot read {path}: unknown file type '{end}'; use .nii.gz, .nii, .mha, .mhd or .nrrd.")
    except LeansegError:
        raise
    except (OSError, EOFError, ValueError, RuntimeError, zlib.error, ImageFileError) as e:
        raise LeansegError(
            f"Cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'truncated'}); "
            "the file is damaged or truncated: re-export or re-download it."
        ) from e
    return arr, _checked_affine(path, affine)


def _check_size(path: Path, shape: tuple[int, ...], itemsize: int, data_offset: int | None) -> None:
    """Refuse, from the header alone, a file whose claimed voxels it cannot hold (``data_offset``: where an uncompressed
    file's voxels start) or that would not fit in memory as it is and as float32."""
    import psutil

    voxels = float(np.prod([float(v) for v in shape])) if shape else 0.0
    if data_offset is not None and data_offset + voxels * itemsize > path.stat().st_size:
        raise LeansegError(
            f"{path}'s header claims {'x'.join(map(str, shape))} voxels, more than its {path.stat().st_size} bytes hold; "
            "the file is damaged or truncated: re-export it."
        )
    need, free = voxels * (itemsize + 4), psutil.virtual_memory().available
    if need > free:
        raise LeansegError(
            f"{path}'s header claims {'x'.join(map(str, shape))} voxels, {need / 2**30:.3g} GiB in memory, more than the "
            f"{free / 2**30:.3g} GiB available; the header is damaged, or the image needs a larger machine."
        )


def _checked_affine(path: Path, affine: np.ndarray) -> np.ndarray:
    """The voxel-to-world affine, refused where it is not finite or maps the voxels onto a plane (zero spacing)."""
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise LeansegError(
            f"{path} has an unusable affine (zero, NaN or infinite spacing or direction); fix its header's spacing and "
            "orientation (sform/qform) and export it again."
        )
    return affine


def read_image(paths: Path | str | list[Path] | list[str], check_values: bool = True) -> Volume:
    """Read an image as float32 (C, X, Y, Z) with its affine.

    Args:
        paths: one file (3D, or 4D with channels last as in MSD) or one file per channel
            (nnU-Net ``_0000``, ``_0001``...), which must share shape and affine.
        check_values: refuse NaN/inf and constant images.
    """
    plist = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    chans: list[np.ndarray] = []
    affine = None
    for p in plist:
        arr, aff = _read_any(p)
        if arr.ndim == 3:
            arr = arr[None]
        elif arr.ndim == 4:
            arr = np.moveaxis(arr, -1, 0)
        else:
            raise LeansegError(f"Image {p} has {arr.ndim} dimensions; leanseg expects a 3D volume or 4D with channels last.")
        if affine is None:
            affine = aff
        else:
            if arr.shape[1:] != chans[0].shape[1:]:
                raise LeansegError(
                    f"Channel file {p} has shape {arr.shape[1:]} but {plist[0]} has {chans[0].shape[1:]}; "
                    "resample the channels onto one grid."
                )
            if not np.allclose(aff, affine, atol=1e-3):
                raise LeansegError(f"Channel file {p} has another affine than {plist[0]}; resample the channels onto one grid.")
        chans.append(arr.astype(np.float32, copy=False))
    assert affine is not None
    image = np.concatenate(chans, axis=0) if len(chans) > 1 else chans[0]
    if check_values:
        if not np.isfinite(image).all():
            raise LeansegError(f"Image {plist[0]} contains NaN or infinite values; fix or mask them before using it.")
        for c in range(image.shape[0]):
            if float(image[c].max()) == float(image[c].min()):
                raise LeansegError(
                    f"Image {plist[min(c, len(plist) - 1)]} is constant (every voxel is {float(image[c].min())}); "
                    "it carries no information: check the export."
                )
    return Volume(image, affine)


def read_label(path: Path | str) -> Volume:
    """Read a label map as uint8 (X, Y, Z) with its affine; values must be whole numbers."""
    path = Path(path)
    arr, affine = _read_any(path)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise LeansegError(f"Label {path} has shape {arr.shape}; a label map must be a 3D volume of class indices.")
    if not np.isfinite(arr).all() or (np.issubdtype(arr.dtype, np.floating) and not np.all(np.mod(arr, 1) == 0)):
        raise LeansegError(f"Label {path} holds non-integer values; save it as an integer class map.")
    if arr.min() < 0 or arr.max() > 255:
        raise LeansegError(f"Label {path} holds values outside 0..255; save it as class indices.")
    return Volume(arr.astype(np.uint8), affine)


def write_label(path: Path | str, label: np.ndarray, affine: np.ndarray) -> Path:
    """Write a (X, Y, Z) label map atomically in the format its name asks for."""
    path = Path(path)
    end = file_ending(path)
    with atomic_path(path) as tmp:
        if end in NIFTI_ENDINGS:
            import nibabel as nib

            img = nib.Nifti1Image(np.asarray(label, dtype=np.uint8), affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            nib.save(img, str(tmp))
        elif end in ITK_ENDINGS:
            import SimpleITK as sitk

            img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(label.astype(np.uint8), (2, 1, 0))))
            lps = LPS_TO_RAS @ affine
            spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
            img.SetSpacing(spacing.tolist())
            img.SetDirection((lps[:3, :3] / spacing[None, :]).flatten().tolist())
            img.SetOrigin(lps[:3, 3].tolist())
            sitk.WriteImage(img, str(tmp), useCompression=True)
        else:
            raise LeansegError(f"Cannot write {path}: unknown file type '{end}'; use .nii.gz or .mha.")
    return path


def write_image(path: Path | str, image: np.ndarray, affine: np.ndarray) -> Path:
    """Write a float (X, Y, Z) or (X, Y, Z, C) NIfTI image atomically (used by the phantom generator)."""
    import nibabel as nib

    path = Path(path)
    with atomic_path(path) as tmp:
        img = nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        nib.save(img, str(tmp))
    return path
