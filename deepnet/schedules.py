"""The old home of ``deepnet.training.schedules``: this name is that very module."""

import sys
from typing import TYPE_CHECKING

from .training import schedules as _module

if TYPE_CHECKING:  # type checkers do not follow the swap below; they see the same names here
    from .training.schedules import *  # noqa: F403

sys.modules[__name__] = _module
