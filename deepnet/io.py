"""Files deepnet writes and reads, by their public names: atomic writes, the user cache directory, parameter files.

A parameter file (an ``.npz`` deepnet wrote, or the book's ``.pkl``) comes from outside, so
``read_params`` trusts nothing in it: only plain integer and floating-point arrays come out,
and their names, dtypes and shapes are checked against what the caller expects before any
array is allocated. Memory use stays a small multiple of the file's size and of the arrays
returned, whatever the file claims.

Each job has its own module, imported from here: ``deepnet._atomic`` (atomic writes),
``deepnet._cachedir`` (the user cache directory), ``deepnet._paramfile`` (read_params and
save_params), ``deepnet._paramcheck`` (what a parameter file must hold, and the errors) and
the two formats' readers, ``deepnet._npz`` and ``deepnet._pkl``. Within deepnet, modules
import from those homes; this module is the stable public path (and, unlike the standard
library's ``io``, holds no code of its own).
"""

from __future__ import annotations

from deepnet._atomic import atomic_write
from deepnet._cachedir import user_cache_dir
from deepnet._paramcheck import ParameterFileError, UnsafePickleError
from deepnet._paramfile import DEFAULT_MAX_BYTES, read_params, save_params

__all__ = [
    "atomic_write",
    "user_cache_dir",
    "DEFAULT_MAX_BYTES",
    "ParameterFileError",
    "UnsafePickleError",
    "read_params",
    "save_params",
]
