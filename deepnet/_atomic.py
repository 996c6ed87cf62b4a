"""Atomic file writes: a temporary file beside the target, renamed over it only on success."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import secrets
import stat
from typing import IO, Any, Iterator, Tuple, Union

# A file system path as atomic_write takes it.
PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_write"]

# A temporary file is named ".<target>.<pid>-<host>-<random>.tmp": the pid and host say
# whether its writer can still be alive, so a later write can remove it if it cannot.
_HOST_ID = hashlib.sha256(platform.node().encode()).hexdigest()[:8]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    A crash (or an exception inside the ``with`` block) leaves any previous file untouched
    and no half-written file behind; the temporary file of a writer that was killed outright
    is removed by the next successful write of the same file. An existing file keeps its
    permission bits, and a symbolic link stays a link: the file it points to is replaced.
    """
    target = os.path.realpath(path)
    directory, name = os.path.split(target)
    os.makedirs(directory, exist_ok=True)
    tmp, fd = _create_temporary(directory, name)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _remove_stale_temporaries(directory, name)


def _create_temporary(directory: str, name: str) -> Tuple[str, int]:
    """(path, fd) of a new file; mode 0666 less the umask, like any file open() creates."""
    while True:
        tmp = os.path.join(directory, f".{name}.{os.getpid()}-{_HOST_ID}-{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _remove_stale_temporaries(directory: str, name: str) -> None:
    """Remove the temporaries of writers of ``name`` (on this host) that no longer run."""
    if os.name != "posix":
        return  # os.kill(pid, 0) would not test for a process there
    pattern = re.compile(re.escape(f".{name}.") + rf"(\d+)-{_HOST_ID}-[0-9a-f]{{8}}\.tmp")
    try:
        entries = os.listdir(directory)
    except OSError:
        return  # the write itself succeeded; cleaning up is a courtesy
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match and not _process_exists(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, entry))


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid a writer has; os.kill would signal a process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or no pid at all: leave its file alone
    return True
