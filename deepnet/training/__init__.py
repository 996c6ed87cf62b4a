"""Training: the loop (``trainer``) and its one-call form (``fit``), what plugs into it (``callbacks``: a learning-rate
schedule, a weight average), its checkpoints (``checkpoint``), and the optimizers,
schedules and data augmentation it uses."""

from .callbacks import Callback, WeightAverage
from .trainer import Trainer, batch_starts
from .fit import fit

__all__ = ["Trainer", "Callback", "WeightAverage", "batch_starts", "fit"]
