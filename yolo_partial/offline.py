"""Keep every code path off the network: Ultralytics probes DNS, auto-installs packages, fetches fonts and AMP weights.

`YOLO_OFFLINE` and `YOLO_AUTOINSTALL` are read when Ultralytics is imported, so `set_offline_env()` must run first.
"""

from __future__ import annotations

import os


def set_offline_env() -> None:
    """Default YOLO_OFFLINE=1 and YOLO_AUTOINSTALL=False unless the user set them."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")


def offline() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").lower() in {"1", "true", "yes"}


def install_offline_guards() -> None:
    """Give Ultralytics' font and AMP checks a local answer when offline, instead of a network attempt."""
    if not offline():
        return
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer_mod
    import ultralytics.utils.plotting as plotting

    for mod in (data_utils, plotting):
        if not getattr(mod.check_font, "_yolo_partial", False):
            mod.check_font = _local_font(mod.check_font)
    if not getattr(trainer_mod.check_amp, "_yolo_partial", False):
        trainer_mod.check_amp = _local_amp(trainer_mod.check_amp)


def _local_font(check_font):
    """Wrap check_font: use a local font (matplotlib's DejaVu Sans) where Ultralytics would download Arial."""

    def wrapped(font: str = "Arial.ttf"):
        from pathlib import Path

        from matplotlib import font_manager
        from ultralytics.utils import USER_CONFIG_DIR

        name = Path(font).name
        if (USER_CONFIG_DIR / name).exists() or any(name in f.fname for f in font_manager.fontManager.ttflist):
            return check_font(font)
        return font_manager.findfont("DejaVu Sans")

    wrapped._yolo_partial = True
    return wrapped


def _local_amp(check_amp):
    """Wrap check_amp: without the local yolo26n.pt it would download it; keep AMP as asked, as Ultralytics does offline."""

    def wrapped(model):
        from ultralytics.utils import LOGGER, WEIGHTS_DIR

        if next(model.parameters()).device.type in {"cpu", "mps"} or (WEIGHTS_DIR / "yolo26n.pt").is_file():
            return check_amp(model)
        LOGGER.warning("AMP: checks skipped offline (yolo26n.pt not in the weights dir); keeping amp=True")
        return True

    wrapped._yolo_partial = True
    return wrapped
