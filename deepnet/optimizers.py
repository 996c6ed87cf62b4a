"""The old home of ``deepnet.training.optimizers``: this name is that very module."""

import sys

from .training import optimizers as _module

sys.modules[__name__] = _module
