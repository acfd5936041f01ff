"""How a method key is declared: default, type, range check and the one-line description of what is allowed.

Each method declares its own keys with these (see yolo_partial.losses.method); yolo_partial.keys assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Key:
    """One method key: its default (always "off" or neutral), its type, a range check, what is allowed, and help."""

    default: Any
    kind: type
    allowed: str
    ok: Callable[[Any], bool] = lambda v: True
    help: str = ""


def unit(default: float, lo_open: bool, hi_open: bool, help: str = "") -> Key:
    """A float key in a sub-interval of [0, 1], open or closed at either end."""
    lo, hi = ("(" if lo_open else "["), (")" if hi_open else "]")
    check = lambda v: (v > 0 if lo_open else v >= 0) and (v < 1 if hi_open else v <= 1)  # noqa: E731
    return Key(default, float, f"a number in {lo}0, 1{hi}", check, help)


def at_least(default: float | int, lo: float, help: str = "", strict: bool = False) -> Key:
    """A float (or int, when the default is an int) key >= lo, or > lo when strict."""
    kind = int if isinstance(default, int) and not isinstance(default, bool) else float
    noun = "an integer" if kind is int else "a number"
    check = (lambda v: v > lo) if strict else (lambda v: v >= lo)
    return Key(default, kind, f"{noun} {'>' if strict else '>='} {lo:g}", check, help)


def choice(default: str, *choices: str, help: str = "") -> Key:
    """A string key taking one of `choices`."""
    return Key(default, str, "one of " + "|".join(choices), lambda v: v in choices, help)


def flag(help: str = "", default: bool = False) -> Key:
    """A boolean key (a method's on/off switch)."""
    return Key(default, bool, "True or False", help=help)
