"""Dataset folders, image I/O with geometry, fingerprinting, preprocessing, patches and phantoms."""

from leanseg.data.datasets import Case, Dataset, load_dataset
from leanseg.data.io import Volume, read_image, read_label, write_label

__all__ = ["Case", "Dataset", "Volume", "load_dataset", "read_image", "read_label", "write_label"]
