"""Old import path of the compiled CPU backend, deepnet.backends.cpu: re-exports it.

Only reads go through here: a name rebound here is not rebound there (patch
deepnet.backends.cpu itself).
"""

from deepnet.backends.cpu import *  # noqa: F401,F403
from deepnet.backends.cpu import (
    _describe_winograd_rule,
    _forward_filters,
    _max_abs,  # noqa: F401
    _measured_winograd_rule,
    _prepared,
    _prepared_filters,
    _winograd_filters,
)
