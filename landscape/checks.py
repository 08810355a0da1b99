"""Argument checks shared by the numerics: each returns the value or raises ``ValueError`` naming
the argument and the bad value."""

from __future__ import annotations

import math

__all__ = ["check_choice", "check_count", "check_number"]


def check_number(name: str, value, *, low: float = 0.0, strict: bool = True,
                 high: float | None = None) -> float:
    """A finite real (not bool) ``> low`` (``>= low`` unless ``strict``) and ``< high``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if strict else value >= low) and (high is None or value < high)
    if not ok:
        bound = f"{'>' if strict else '>='} {low:g}" + (f" and < {high:g}" if high else "")
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return float(value)


def check_count(name: str, value, minimum: int = 1) -> int:
    """An int (not bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value
