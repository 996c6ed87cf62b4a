"""Training: the loop (``trainer``), what plugs into it (``callbacks``: a learning-rate
schedule, a weight average), its checkpoints (``checkpoint``), and the optimizers,
schedules and data augmentation it uses."""

from .callbacks import Callback, WeightAverage
from .trainer import Trainer, batch_starts

__all__ = ["Trainer", "Callback", "WeightAverage", "batch_starts"]
