"""The old home of ``deepnet.training.schedules``: this name is that very module."""

import sys

from .training import schedules as _module

sys.modules[__name__] = _module
