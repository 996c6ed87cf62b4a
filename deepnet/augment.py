"""The old home of ``deepnet.training.augment``: this name is that very module."""

import sys
from typing import TYPE_CHECKING

from .training import augment as _module

if TYPE_CHECKING:  # type checkers do not follow the swap below; they see the same names here
    from .training.augment import *  # noqa: F403

sys.modules[__name__] = _module
