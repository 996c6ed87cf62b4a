"""The book's ``from deepnet.trainer import Trainer``: the trainer lives in ``deepnet.training``."""

from .training.callbacks import Callback, WeightAverage
from .training.trainer import Trainer, batch_starts

__all__ = ["Trainer", "Callback", "WeightAverage", "batch_starts"]
