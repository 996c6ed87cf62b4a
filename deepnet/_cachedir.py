"""The user cache directory: where deepnet keeps caches and downloads."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache_dir"]


def user_cache_dir() -> Path:
    """Where deepnet keeps caches and downloads: ``$XDG_CACHE_HOME/deepnet``, else ``~/.cache/deepnet``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative path
        return Path.home() / ".cache" / "deepnet"
    return Path(base) / "deepnet"
