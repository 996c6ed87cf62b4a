"""What a parameter file must hold: the caller's request, checked entry by entry before any
array is allocated, and the errors a malformed or unexpected file raises."""

from __future__ import annotations

import contextlib
import math
import pickle
import re
from typing import Any, Dict, FrozenSet, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from deepnet._errors import short_repr

__all__ = ["ParameterFileError", "UnsafePickleError", "Request", "parsing", "short", "cut", "is_shape"]

# name -> the shape the caller expects (None: any shape).
Expected = Dict[str, Optional[Tuple[int, ...]]]

# The dtypes a parameter may have: integer and floating-point of 1 to 8 bytes, any byte order.
_NUMERIC_DESCR = re.compile(r"[<>|=]?(?:[iu][1248]|f[248])")
_TEXT_DESCR = re.compile(r"[<>|=]?U[0-9]{1,9}")


class ParameterFileError(ValueError):
    """A parameter file is malformed, holds something other than plain numeric arrays, or
    does not hold what the caller expects. The message names the file."""


class UnsafePickleError(ParameterFileError, pickle.UnpicklingError):
    """A pickle asked for something that rebuilding plain NumPy arrays does not need."""


class Request:
    """What a read_params call asks for; checks entries against it (shared by both formats)."""

    def __init__(
        self,
        path: str,
        expected: Optional[Expected],
        strict: bool,
        text: FrozenSet[str],
        max_bytes: int,
        optional: FrozenSet[str] = frozenset(),
        entry_limits: Optional[Mapping[str, int]] = None,
    ) -> None:
        self.path, self.expected, self.strict = path, expected, strict
        self.text, self.max_bytes, self.optional = text, max_bytes, optional
        self.entry_limits = entry_limits or {}

    def error(self, message: str) -> ParameterFileError:
        return ParameterFileError(f"{self.path}: {message}")

    def select(self, names: List[str]) -> List[str]:
        """The file's ``names`` to read, in file order, after the missing/unexpected checks."""
        wanted = None if self.expected is None else self.expected.keys() | self.text
        if self.strict:
            present = set(names)
            for name in [*(self.expected or ()), *sorted(self.text)]:
                if name not in present and name not in self.optional:
                    raise self.error(f"parameter {short(name)} is missing")
            for name in names:
                if wanted is not None and name not in wanted:
                    raise self.error(f"unexpected parameter {short(name)}")
        return [name for name in names if wanted is None or name in wanted]

    def check(self, entries: Mapping[str, Tuple[Any, Any]]) -> Dict[str, np.dtype[Any]]:
        """Check ``entries`` (name -> (shape, dtype descriptor)); return name -> np.dtype."""
        dtypes: Dict[str, np.dtype[Any]] = {}
        total = 0
        for name, (shape, descr) in entries.items():
            dtype = self._check_entry(name, shape, descr)
            nbytes = math.prod(shape) * dtype.itemsize
            limit = self.entry_limits.get(name)
            if limit is not None and nbytes > limit:
                raise self.error(f"entry {short(name)} takes {nbytes} bytes, more than the {limit} bytes it may have")
            total += nbytes
            dtypes[name] = dtype
        if total > self.max_bytes:
            raise self.error(
                f"its arrays take {total} bytes, more than the limit of {self.max_bytes} bytes (max_bytes)"
            )
        return dtypes

    def _check_entry(self, name: str, shape: Any, descr: Any) -> np.dtype[Any]:
        is_text = name in self.text
        pattern = _TEXT_DESCR if is_text else _NUMERIC_DESCR
        if not (isinstance(descr, str) and pattern.fullmatch(descr)):
            expected = (
                "expected a string"
                if is_text
                else "a parameter file holds only integer and floating-point arrays (of 1 to 8 bytes per item)"
            )
            raise self.error(f"parameter {short(name)} has dtype {short(descr)}; {expected}")
        expected_shape = () if is_text else (self.expected or {}).get(name)
        if expected_shape is not None and shape != expected_shape:
            raise self.error(f"parameter {short(name)} has shape {short(shape)}, expected {expected_shape}")
        return np.dtype(descr)


def cut(text: object) -> str:
    """A str from a file (a pickle's module name), cut short without quotes."""
    text = str(text)
    return text if len(text) <= 80 else text[:77] + "..."


short = short_repr


@contextlib.contextmanager
def parsing(request: Request, what: str) -> Iterator[None]:
    """Report any failure of a parser reading the file's bytes as a ParameterFileError."""
    try:
        yield
    except (ParameterFileError, MemoryError):
        raise
    except Exception as err:  # a parser of untrusted bytes can fail in any way
        raise request.error(f"{what} ({type(err).__name__}: {str(err)[:200]})") from err


def is_shape(shape: object) -> bool:
    """Whether ``shape`` is a tuple of non-negative ints (what a shape read from a file must be)."""
    return isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)
