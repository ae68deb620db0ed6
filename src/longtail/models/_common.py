"""Argument checks shared by the model constructors."""

from __future__ import annotations


def check_positive_int(owner: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1 (bools rejected), else raise ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value
