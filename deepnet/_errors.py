"""Errors that name a setting (``lr``, ``epochs``) in words the caller can translate.

The library names a setting by its own name; the command line shows the same message with
its flags (``--lr``, ``--epochs``): ``SettingError.render(name)`` writes each setting with
``name(setting)``.  A message is built from a template whose ``{setting}`` fields are
settings, and literal text (paths, values) that is never parsed.
"""

from __future__ import annotations

import re
import reprlib
from typing import Callable, List, Optional, Union

__all__ = ["Setting", "SettingError", "SettingImportError", "short_repr", "template"]

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def short_repr(value: object) -> str:
    """repr() cut short, for quoting in an error a value read from a file or a spec: a name
    or a setting there may be megabytes long."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int too long to print, a deeply nested list
        text = f"an int of {value.bit_length()} bits" if isinstance(value, int) else f"a {type(value).__name__}"
    return text if len(text) <= 120 else text[:117] + "..."


class Setting:
    """A setting's name inside a message; ``text`` is how the library writes it."""

    def __init__(self, name: str, text: Optional[str] = None) -> None:
        self.name, self.text = name, name if text is None else text

    def __repr__(self) -> str:
        return f"Setting({self.name!r})"


# A message's parts: literal text and settings.
Parts = List[Union[str, Setting]]


def template(text: str) -> Parts:
    """``text``'s parts: each ``{name}`` a Setting (``{name|library text}`` with its own text)."""
    parts: Parts = []
    for index, piece in enumerate(re.split(r"\{([a-z_]+(?:\|[^}]*)?)\}", text)):
        if index % 2:
            name, _, shown = piece.partition("|")
            parts.append(Setting(name, shown if "|" in piece else None))
        elif piece:
            parts.append(piece)
    return parts


class SettingError(ValueError):
    """A ValueError whose message names settings; ``parts``: strings and Settings."""

    def __init__(self, *parts: Union[str, Setting, Parts]) -> None:
        self.parts: Parts = [part for group in parts for part in (group if isinstance(group, list) else [group])]
        super().__init__(self.render())

    def render(self, name: Optional[Callable[[Setting], str]] = None) -> str:
        """The message, with each setting written by ``name(setting)`` (default: its text)."""
        return _render(self.parts, name)


class SettingImportError(ImportError):
    """An ImportError whose message names settings (as SettingError)."""

    def __init__(self, *parts: Union[str, Setting, Parts]) -> None:
        self.parts = SettingError(*parts).parts
        super().__init__(self.render())

    def render(self, name: Optional[Callable[[Setting], str]] = None) -> str:
        """The message, with each setting written by ``name(setting)`` (default: its text)."""
        return _render(self.parts, name)


def _render(parts: Parts, name: Optional[Callable[[Setting], str]]) -> str:
    return "".join(part if isinstance(part, str) else (name(part) if name else part.text) for part in parts)
