"""Checking a layer's settings from a spec (untrusted data) and quoting its values in errors.

Every layer's ``from_config`` checks its own entries with these helpers; their messages say
where in the spec the entry is (``where``) and quote a value with ``_short`` (a value from
a file may be megabytes long).
"""

from __future__ import annotations
from typing import AbstractSet, Any, Dict, Tuple
from deepnet._errors import short_repr

_short = short_repr  # the one in deepnet._errors


def _check_keys(spec: Dict[str, Any], allowed: AbstractSet[str], where: str) -> None:
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValueError(
            f"build: {where} ({spec['type']}): unknown entry {_short(unknown[0])}; "
            f"allowed: {', '.join(sorted(allowed - {'type'})) or 'none'}"
        )


def _entry(spec: Dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in spec:
        raise ValueError(f"build: {where} ({spec['type']}): missing entry {key!r}")
    value = spec[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"build: {where} ({spec['type']}): {key!r} must be a {kind.__name__}, got {_short(value)}")
    return value


def _int(spec: Dict[str, Any], key: str, where: str, minimum: int = 1) -> int:
    value = _entry(spec, key, int, where)
    if value < minimum or value >= 1 << 31:
        raise ValueError(f"build: {where} ({spec['type']}): {key!r} must be an int >= {minimum}, got {_short(value)}")
    return value


def _int_pair(spec: Dict[str, Any], key: str, where: str, minimum: int) -> Tuple[int, int]:
    value = spec.get(key)
    pair = [value, value] if isinstance(value, int) else value
    if (
        not isinstance(pair, list)
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and minimum <= v < 1 << 31 for v in pair)
    ):
        raise ValueError(
            f"build: {where} ({spec['type']}): {key!r} must be an int or a pair of ints "
            f">= {minimum}, got {_short(value)}"
        )
    return (pair[0], pair[1])


def _flag(spec: Dict[str, Any], key: str, where: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"build: {where} ({spec['type']}): {key!r} must be true or false, got {_short(value)}")
    return value


def _fraction(spec: Dict[str, Any], key: str, where: str, default: float, upper_open: bool) -> float:
    """A number in [0, 1] (or [0, 1) with upper_open), default when absent."""
    value = spec.get(key, default)
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 <= value <= 1
        or (upper_open and value == 1)
    ):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"build: {where} ({spec['type']}): {key!r} must be in {interval}, got {_short(value)}")
    return float(value)
