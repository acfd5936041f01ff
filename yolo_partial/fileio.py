"""Safe output writing: whole folders appear at once, files are replaced atomically, images are linked not copied."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import PartialConfigError

MARKER = ".yolo-partial.json"  # marks a folder written by yolo-partial, so re-running may replace it


def cache_root() -> Path:
    """yolo-partial's own cache folder: $YOLO_PARTIAL_CACHE, else ~/.cache/yolo-partial (the embedded dataset, label
    caches)."""
    return Path(os.environ.get("YOLO_PARTIAL_CACHE") or Path.home() / ".cache" / "yolo-partial")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to path through a temporary sibling file, so readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_replaceable(out: Path) -> None:
    """Raise a one-line error unless `out` is absent, empty, or an earlier yolo-partial output (holds MARKER)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise PartialConfigError(
            f"out={out} exists and was not written by yolo-partial: expected a new or empty folder (nothing was changed)"
        )


@contextmanager
def atomic_dir(out: str | Path, producer: dict) -> Iterator[Path]:
    """Yield an empty temporary sibling of `out` to fill; on success it replaces `out`, on any error it is removed.

    `producer` (e.g. the command and its arguments) is written to out/MARKER. An existing `out` is replaced only if an
    earlier yolo-partial run wrote it; it is moved aside before the swap and deleted after, so at every moment either
    the old or the new complete folder exists.
    """
    out = Path(out).expanduser().absolute()
    check_replaceable(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    for stale in (tmp, old):  # left by an earlier crashed run that had our pid
        shutil.rmtree(stale, ignore_errors=True)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:  # name the user's folder, not the temporary sibling
        raise PartialConfigError(f"out={out} cannot be written ({e.strerror or e}): expected a folder in a writable "
                                 f"place") from None
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps(producer, indent=1, sort_keys=True))
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def link_image(src: Path, dst: Path) -> str:
    """Make dst refer to image src without copying its bytes where the platform allows -> 'symlink'|'hardlink'|'copy'.

    Per-file links, never a linked folder: Ultralytics resolves the image folder's real path and finds each image's
    labels beside it, so a linked folder would silently load the source's labels.
    """
    try:
        os.symlink(src.absolute(), dst)
        return "symlink"
    except OSError:
        return hardlink_or_copy(src, dst)


def hardlink_or_copy(src: str | Path, dst: str | Path) -> str:
    """Make dst a second name of file src, copying where the filesystem has no hard links -> 'hardlink'|'copy'.

    Unlike `link_image` (symlink first), for files that must outlive or stand apart from their source: files carried
    over from an output that is about to be replaced, and the two variants of the embedded dataset (a symlinked image
    folder would resolve to the other variant's labels).
    """
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"
