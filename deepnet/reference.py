"""The pure-NumPy reference of every kernel (the "numpy" backend), by its public name.

It lives in deepnet.backends.reference; this module re-exports it, so that
``from deepnet import reference`` and ``deepnet.reference.im2col`` keep working.
"""

from deepnet.backends.reference import *  # noqa: F401,F403
