"""The method keys: assembled from the registered methods' own declarations, checked once before training starts.

Every key defaults to "off", so a run that sets none of them is stock Ultralytics. A method declares its keys in its
own file (`KEYS`, see yolo_partial.losses.method); this module only collects them, with the trainer's guard key, and
validates values: one-line errors naming the key and what is allowed.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from .errors import PartialConfigError
from .keyspec import Key
from .losses.method import COMMON_KEYS
from .losses.registry import METHODS
from .nonfinite import KEYS as GUARD_KEYS


def _assemble() -> dict[str, Key]:
    table: dict[str, Key] = {}
    owners = [*((m.__name__, m.KEYS) for m in METHODS), ("several methods", COMMON_KEYS), ("the non-finite guard", GUARD_KEYS)]
    for owner, keys in owners:
        for name, key in keys.items():
            if name in table:  # a programming error: two methods claim one key
                raise RuntimeError(f"method key '{name}' of {owner} is declared twice")
            table[name] = key
    return table


METHOD_KEYS: dict[str, Key] = _assemble()
METHOD_DEFAULTS: dict[str, Any] = {k: key.default for k, key in METHOD_KEYS.items()}


def get_arg(args: Any, name: str, default: Any = None) -> Any:
    """`args[name]` from a dict or namespace (Ultralytics' `model.args` is either), else `default`."""
    return args.get(name, default) if isinstance(args, dict) else getattr(args, name, default)


def coerce(name: str, value: Any) -> Any:
    """Return `value` as the type of method key `name`, or raise PartialConfigError naming the key."""
    key = METHOD_KEYS[name]
    if key.kind is bool:
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            value = value.lower() == "true"
        good = isinstance(value, bool)
    elif key.kind is float:
        if isinstance(value, str) and value.lower() in {"inf", "+inf"}:  # key=inf on the command line
            value = math.inf
        good = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if good else value
    elif key.kind is int:
        good = isinstance(value, int) and not isinstance(value, bool)
    else:
        good = isinstance(value, str)
    if not good or not key.ok(value):
        raise PartialConfigError(f"{name}={value!r} is invalid: expected {key.allowed}")
    return value


def check_method_args(args: dict[str, Any]) -> dict[str, Any]:
    """Return `args` with every method key present, type-coerced and range-checked (other keys untouched)."""
    out = dict(args)
    for name in METHOD_KEYS:
        out[name] = coerce(name, out.get(name, METHOD_DEFAULTS[name]))
    return out


def method_args(args: Any) -> dict[str, Any]:
    """Method keys read from a dict or namespace (Ultralytics' `model.args`), defaults filled in and checked."""
    return {name: coerce(name, get_arg(args, name, key.default)) for name, key in METHOD_KEYS.items()}


def check_known_keys(args: dict[str, Any], known: set[str]) -> None:
    """Raise PartialConfigError for the first key of `args` that is not in `known`, suggesting close matches."""
    for k in args:
        if k not in known:
            close = difflib.get_close_matches(k, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; see 'yolo-partial help' for the keys"
            raise PartialConfigError(f"unknown key '{k}'{hint}")
