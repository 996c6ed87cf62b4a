"""What every ``deepnet`` command shares on the command line: the argparse types (bounded
integers and numbers, existing files, checked specs), the options common to several
commands, and how a user's mistake is reported (CommandError, one line on stderr).

deepnet.app (predict, serve) uses these public names; this module imports nothing from it.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import zipfile
from typing import Any, Callable, NoReturn

__all__ = [
    "DTYPES",
    "CommandError",
    "USER_ERRORS",
    "Parser",
    "fail",
    "one_line",
    "flag",
    "int_in",
    "positive_int",
    "float_between",
    "decay",
    "existing_file",
    "augment_spec",
    "schedule_spec",
    "add_common",
    "dtype_name",
]

DTYPES = ("float16", "float32", "float64")
# --dtype's choices: DTYPES and bfloat16, a storage format from the optional ml_dtypes package
# (DTYPES stays the three NumPy dtypes that evaluate --half-check compares).
DTYPE_CHOICES = ("bfloat16",) + DTYPES
# Bounds of the numeric options: far beyond any sensible run, well inside what the arithmetic takes.
MAX_EPOCHS = 1_000_000
MAX_IMAGES = 100_000_000
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 10.0
MAX_SEED = 2**128 - 1
MAX_THREADS = 1024
MAX_MEMBERS = 1000
MAX_SHOWN = 10_000


class CommandError(Exception):
    """A mistake of the user's (bad option, missing file...): one line on stderr, no traceback."""


class RanksDisagree(CommandError):
    """The same error, found by every MPI rank: rank 0 alone reports it."""


# Errors that come from the user's input or environment, not from a bug in deepnet.
USER_ERRORS = (CommandError, OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile)


class Parser(argparse.ArgumentParser):
    """Raises CommandError instead of printing usage and exiting, so main() reports it."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(message)


def fail(args: argparse.Namespace, message: str, code: int, every_rank: bool = False) -> int:
    """Report on stderr; with several MPI ranks, end all of them (the others would wait forever).
    An error every rank found (``every_rank``) is reported by rank 0 alone, which ends them all."""
    communicator: Any = getattr(args, "communicator", None)
    several = communicator is not None and communicator.size > 1
    if several and every_rank and not communicator.is_root:
        communicator.wait_for_abort()  # rank 0 reports it and aborts every rank
        return code
    # One write, so that mpiexec does not interleave it with another rank's lines.
    sys.stderr.write(f"deepnet{f' (rank {communicator.rank})' if several else ''}: {message}\n")
    sys.stderr.flush()
    if several:
        communicator.abort(code)
    return code


# How the command line writes a setting a lower layer names (deepnet._errors.Setting):
# its flag, "--" and the name with dashes, but for these.
_FLAG_TEXT = {"overwrite": " (--overwrite)"}


def flag(setting: Any) -> str:
    """The command line's words for a setting named in a lower layer's message."""
    return _FLAG_TEXT.get(setting.name, "--" + setting.name.replace("_", "-"))


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name if it has none), in the command
    line's words: the settings a lower layer names are written as flags."""
    render = getattr(exc, "render", None)
    text = render(flag) if callable(render) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


# -- argparse types ------------------------------------------------------------------------


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            what = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise argparse.ArgumentTypeError(f"expected {what} (at most {high:,}), got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


positive_int = int_in(1, MAX_IMAGES)  # deepnet.app's --threads uses it


def float_between(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] ((low, high] with low_open)."""
    bounds = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
    return lambda text: _float_in(
        text, lambda v: (v > low if low_open else v >= low) and v <= high, f"a finite number {bounds}"
    )


def augment_spec(text: str) -> str:
    """--augment, checked now (keys, numbers, bounds) rather than at the first batch."""
    from ..training.augment import Augment

    try:
        Augment.from_spec(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(
            str(exc)
            .replace("deepnet.augment.Augment.from_spec", "")
            .replace("deepnet.augment.Augment: ", "")
            .lstrip(": ")
        ) from None
    return text


def schedule_spec(text: str) -> str:
    """--lr-schedule, checked now (name, settings, bounds; min_lr against --lr comes later)."""
    from ..training.schedules import parse

    try:
        parse(text, lr=MAX_LR, steps_per_epoch=1, epochs=1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("Schedule: ", "")) from None
    return text


def _float_in(text: str, ok: Callable[[float], bool], what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def decay(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (--ema)."""
    return _float_in(text, lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")


def existing_file(path: str) -> str:
    """An argparse type: the path of a file that exists."""
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"file not found: {path!r}")
    return path


# -- options -------------------------------------------------------------------------------


def dtype_name(value: str) -> str:
    """--dtype's value; bfloat16 imports ml_dtypes, which registers the dtype's name with NumPy
    (an error naming the extra to install where it is missing)."""
    if value == "bfloat16":
        from .._dtypes import require_bfloat16

        try:
            require_bfloat16()
        except ImportError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def add_common(p: argparse.ArgumentParser, dtype_default: str) -> None:
    """--dtype, --data, --backend and --threads, for the commands that load MNIST."""
    p.add_argument(
        "--dtype",
        type=dtype_name,
        choices=DTYPE_CHOICES,
        default=dtype_default,
        help="floating-point type (default %(default)s; bfloat16 needs the bf16 extra)",
    )
    p.add_argument("--data", metavar="DIR", help="directory holding the MNIST files (only there)")
    p.add_argument(
        "--backend", choices=("cython", "numpy"), help="CPU kernels: compiled (cython) or the NumPy reference"
    )
    p.add_argument("--threads", type=int_in(1, MAX_THREADS), metavar="N", help="threads for the kernels")
