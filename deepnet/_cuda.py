"""Old import path of the CUDA backend, deepnet.backends.cuda: re-exports it.

Only reads go through here: a name rebound here is not rebound there (patch
deepnet.backends.cuda itself, as tests/test_cuda.py does with _cupy).
"""

from deepnet.backends.cuda import *  # noqa: F401,F403
from deepnet.backends.cuda import _cupy, _kernel, _module  # noqa: F401
