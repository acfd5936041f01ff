"""Every patch of Ultralytics internals that yolo-partial makes, each with its reason (as Ultralytics keeps its own in
ultralytics/utils/patches.py). Each is idempotent and leaves stock behaviour unchanged where it does not apply.

- `check_font` / `check_amp` (installed by the trainer when offline): local answers instead of downloads.
- `strip_optimizer` (around the final evaluation): written through a temporary file, so a kill leaves last.pt whole.
- `parse_model` (on import of yolo_partial): builds the YOLOv5 objectness head's YAML rows.
- `YOLODataset._load_or_scan_cache` (trainer and CLI): label caches live in yolo-partial's cache folder, not beside
  the user's labels.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ultralytics.nn import tasks
from ultralytics.utils import LOGGER

from .models.objectness import ObjectnessDetect
from .fileio import cache_root
from .offline import offline


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


@contextmanager
def strip_optimizer_atomic() -> Iterator[None]:
    """Within the block, Ultralytics' trainer strips checkpoints atomically: its strip_optimizer torch.saves over the
    checkpoint in place, which a kill would leave truncated (final_eval calls it on last.pt and best.pt)."""
    import ultralytics.engine.trainer as engine

    strip = engine.strip_optimizer
    engine.strip_optimizer = functools.partial(_strip_atomic, strip)
    try:
        yield
    finally:
        engine.strip_optimizer = strip


def _strip_atomic(strip, f, s: str = "", updates: dict | None = None) -> dict:
    """Call Ultralytics' strip_optimizer writing into a temporary sibling file, then move it over the destination."""
    dst = Path(s or f)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    rename = _Rename(str(tmp), str(dst))  # its log line names the file users will find, not the temporary
    LOGGER.addFilter(rename)
    try:
        ckpt = strip(f, str(tmp), updates)
        if ckpt:  # an empty dict: not a checkpoint, nothing was written
            os.replace(tmp, dst)
        return ckpt
    finally:
        LOGGER.removeFilter(rename)
        tmp.unlink(missing_ok=True)


class _Rename(logging.Filter):
    """A log filter replacing one path by another in the messages it passes."""

    def __init__(self, old: str, new: str):
        super().__init__()
        self.old, self.new = old, new

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and self.old in record.msg:
            record.msg = record.msg.replace(f"{self.new}, saved as {self.old},", f"{self.new},").replace(self.old, self.new)
        return True


def _with_objectness_head(parse_model):
    """Wrap Ultralytics' parse_model(d, ch, verbose) so that a last row naming ObjectnessDetect builds that head."""

    @functools.wraps(parse_model)
    def wrapper(d: dict, ch: int, verbose: bool = True):
        row = d["head"][-1]
        if row[2] != ObjectnessDetect.__name__:
            return parse_model(d, ch, verbose)
        stand_in = {**d, "head": [*d["head"][:-1], [row[0], 1, "Detect", [d["nc"]]]]}
        layers, save = parse_model(stand_in, ch, verbose)
        layers[-1] = ObjectnessDetect.from_row(row, d, layers[-1])
        if verbose:
            h = layers[-1]
            LOGGER.info(f"{h.i:>3} {h.type} replaces the Detect above: {h.np} params, {h.na} anchors/level, nc={h.nc}")
        return layers, save

    return wrapper


def install_objectness_parser() -> None:
    """Let Ultralytics build YAMLs whose last row is ObjectnessDetect: its parse_model gives the input channels of a
    multi-input layer only to its own head classes, so such a row is built as a stock Detect first (for the channels)
    and then replaced by the objectness head. Once per process; every other YAML passes through unchanged."""
    if not hasattr(tasks.parse_model, "__wrapped__"):
        tasks.parse_model = _with_objectness_head(tasks.parse_model)


def relocate_label_cache() -> None:
    """Make Ultralytics keep its `labels/<split>.cache` files in yolo-partial's cache folder.

    Ultralytics writes the cache beside the label folder, i.e. into the user's dataset (for a split copy, into the
    source its val/test point at): a dataset given to yolo-partial is never written to. The cache is validated by a hash
    of the label and image paths, sizes and mtimes, so keeping it elsewhere reuses it exactly when Ultralytics would;
    its file name is keyed by the label folder's absolute path.
    """
    from ultralytics.data.dataset import YOLODataset

    load = YOLODataset._load_or_scan_cache
    if getattr(load, "_yolo_partial", False):
        return

    @functools.wraps(load)
    def relocated(self, cache_path: Path, cache_hash: str):
        return load(self, label_cache_path(cache_path), cache_hash)

    relocated._yolo_partial = True
    YOLODataset._load_or_scan_cache = relocated


def label_cache_path(cache_path: str | Path) -> Path:
    """Where the label cache Ultralytics would write at `cache_path` lives instead (its parent folder is created)."""
    cache_path = Path(cache_path).absolute()
    key = hashlib.sha1(str(cache_path.parent).encode()).hexdigest()[:16]
    out = cache_root() / "label-caches" / f"{key}-{cache_path.name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out
