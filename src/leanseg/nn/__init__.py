"""Building blocks shared by the model families."""

from leanseg.nn.blocks import ConvNormAct, ResidualBlock

__all__ = ["ConvNormAct", "ResidualBlock"]
