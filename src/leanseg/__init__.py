"""leanseg: 3D medical image segmentation that costs less (time, memory, tuning)."""

__version__ = "0.1.0"

from leanseg.errors import LeansegError  # noqa: E402

__all__ = ["LeansegError", "__version__"]
