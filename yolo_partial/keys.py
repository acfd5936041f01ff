"""The fork's training keys: defaults, types and allowed ranges, checked before any training starts.

Every key defaults to "off", so a run that sets none of them is stock Ultralytics.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from .errors import PartialConfigError


@dataclass(frozen=True)
class Key:
    """One fork key: its default, its type, a range check and the human description of what is allowed."""

    default: Any
    kind: type
    allowed: str
    ok: Callable[[Any], bool] = lambda v: True


def _unit(lo_open: bool, hi_open: bool) -> tuple[Callable[[float], bool], str]:
    """Range check and description for a sub-interval of [0, 1]."""
    lo, hi = ("(" if lo_open else "["), (")" if hi_open else "]")
    check = lambda v: (v > 0 if lo_open else v >= 0) and (v < 1 if hi_open else v <= 1)  # noqa: E731
    return check, f"a number in {lo}0, 1{hi}"


def _float(default: float, lo_open: bool, hi_open: bool) -> Key:
    check, text = _unit(lo_open, hi_open)
    return Key(default, float, text, check)


def _choice(default: str, *choices: str) -> Key:
    return Key(default, str, "one of " + "|".join(choices), lambda v: v in choices)


FORK_KEYS: dict[str, Key] = {
    # Box Prediction Rebalancing (Haque & McEver)
    "neg_iou": _float(0.3, True, True),
    "drop_neg_box": _float(0.0, False, False),
    "drop_neg_obj": _float(0.0, False, False),
    "drop_mode": _choice("random", "random", "score"),
    # Background Recalibration Loss (Zhang et al.)
    "brl": Key(False, bool, "True or False"),
    "brl_t": _float(0.5, False, True),
    "brl_iou": _float(0.1, True, True),
    "brl_weight": Key(0.1, float, "a number >= 0", lambda v: v >= 0),
    "brl_mode": _choice("mirror", "mirror", "zero"),
    "fl_gamma": Key(2.0, float, "a number >= 0", lambda v: v >= 0),
    "fl_alpha": _float(0.25, False, False),
    # Scale-balanced loss (Shuang et al.)
    "scb": Key(False, bool, "True or False"),
    "scb_alpha": Key(1.0, float, "a number >= 0", lambda v: v >= 0),
    "scb_beta": Key(3.0, float, "a number > 0", lambda v: v > 0),
    "scb_box": Key(False, bool, "True or False"),
    # Co-mining (Wang et al.): two views of each image mine pseudo labels for each other
    "comining": Key(False, bool, "True or False"),
    "cm_score": _float(0.6, True, True),
    "cm_nms": _float(0.5, True, True),
    "cm_gt_iou": _float(0.4, True, True),
    # Training guard, every method: consecutive batches with a non-finite loss before training stops
    "nan_patience": Key(10, int, "an integer >= 1", lambda v: v >= 1),
}

FORK_DEFAULTS: dict[str, Any] = {k: key.default for k, key in FORK_KEYS.items()}


def coerce(name: str, value: Any) -> Any:
    """Return `value` as the type of fork key `name`, or raise PartialConfigError naming the key."""
    key = FORK_KEYS[name]
    if key.kind is bool:
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            value = value.lower() == "true"
        good = isinstance(value, bool)
    elif key.kind is float:
        good = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if good else value
    elif key.kind is int:
        good = isinstance(value, int) and not isinstance(value, bool)
    else:
        good = isinstance(value, str)
    if not good or not key.ok(value):
        raise PartialConfigError(f"{name}={value!r} is invalid: expected {key.allowed}")
    return value


def check_fork_args(args: dict[str, Any]) -> dict[str, Any]:
    """Return `args` with every fork key present, type-coerced and range-checked (other keys untouched)."""
    out = dict(args)
    for name in FORK_KEYS:
        out[name] = coerce(name, out.get(name, FORK_DEFAULTS[name]))
    return out


def fork_args(args: Any) -> dict[str, Any]:
    """Fork keys read from a dict or namespace (Ultralytics' `model.args`), defaults filled in and checked."""
    get = args.get if isinstance(args, dict) else lambda k, d: getattr(args, k, d)
    return {name: coerce(name, get(name, key.default)) for name, key in FORK_KEYS.items()}


def check_known_keys(args: dict[str, Any], known: set[str]) -> None:
    """Raise PartialConfigError for the first key of `args` that is not in `known`, suggesting close matches."""
    for k in args:
        if k not in known:
            close = difflib.get_close_matches(k, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; see 'yolo-partial help' for the keys"
            raise PartialConfigError(f"unknown key '{k}'{hint}")

