"""Model families, one per file; importing this package registers them in ``leanseg.registry.MODELS``."""

from leanseg.models import deeplab3d, invertible_unet, lowres, nas_unet, unet  # noqa: F401
from leanseg.models.factory import build_model

__all__ = ["build_model"]
