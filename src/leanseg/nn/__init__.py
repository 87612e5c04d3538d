"""Building blocks shared by the model families."""

from leanseg.nn.blocks import ConvNormAct, ResidualBlock
from leanseg.nn.norm import InstanceNorm, instance_norm

__all__ = ["ConvNormAct", "InstanceNorm", "ResidualBlock", "instance_norm"]
