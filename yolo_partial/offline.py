"""Keep every code path off the network: Ultralytics probes DNS, auto-installs packages, fetches fonts and AMP weights.

`YOLO_OFFLINE` and `YOLO_AUTOINSTALL` are read when Ultralytics is imported, so `set_offline_env()` must run first; the
font and AMP checks get local answers from yolo_partial.patches.
"""

from __future__ import annotations

import os


def set_offline_env() -> None:
    """Default YOLO_OFFLINE=1 and YOLO_AUTOINSTALL=False unless the user set them."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")


def offline() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").lower() in {"1", "true", "yes"}
