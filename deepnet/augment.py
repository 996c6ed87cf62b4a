"""The old home of ``deepnet.training.augment``: this name is that very module."""

import sys

from .training import augment as _module

sys.modules[__name__] = _module
