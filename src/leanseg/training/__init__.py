"""Training: the :class:`Trainer` with small overridable steps, its schedules, losses and validation."""

from leanseg.training.trainer import Trainer, TrainResult, train

__all__ = ["TrainResult", "Trainer", "train"]
