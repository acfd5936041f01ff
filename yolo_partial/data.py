"""Dataset resolution and pre-flight checks: the embedded default dataset, clear one-line errors for bad data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from .keys import PartialConfigError

DEFAULT_DATA = "shapes"  # the embedded, generated-on-first-use dataset
LABEL_FORMAT = "lines 'class cx cy w h' with an integer class in [0, nc) and coordinates in [0, 1]"


class PartialDataError(PartialConfigError):
    """A one-line dataset error naming the file and what was expected."""


def load_yaml(path: str | Path, what: str = "YAML") -> dict[str, Any]:
    """Load a YAML mapping, or raise a one-line error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise PartialDataError(f"{what} not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise PartialDataError(f"{p}: unreadable {what}{where}: expected a YAML mapping of key: value") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PartialDataError(f"{p}: expected a YAML mapping of key: value, got {type(data).__name__}")
    return data


def resolve_data(data: str | None) -> str:
    """Return the path of a usable Ultralytics data YAML for `data`.

    `None`/'' or 'shapes' selects the embedded dataset; a YAML with a `generator:` key is generated on first use; any
    other YAML is checked for its image folders so that a typo fails before training with the file named.
    """
    from .shapes import ensure_shapes

    if not data or data in {DEFAULT_DATA, f"{DEFAULT_DATA}.yaml"}:
        return str(ensure_shapes("partial"))
    path = Path(data)
    if path.suffix not in {".yaml", ".yml"}:
        return str(data)  # Ultralytics handles other sources (ndjson, URLs) itself
    cfg = load_yaml(path, "data YAML")
    if cfg.get("generator") == "shapes":
        return str(ensure_shapes(cfg.get("variant", "partial")))
    if "generator" in cfg:
        raise PartialDataError(f"{path}: unknown generator '{cfg['generator']}': expected 'shapes'")
    check_image_sources(path, cfg)
    return str(path)


def dataset_root(yaml_path: Path, cfg: dict[str, Any]) -> Path:
    """The folder that a data YAML's relative train/val paths refer to, following Ultralytics' rule."""
    root = Path(cfg.get("path") or yaml_path.parent)
    if not root.is_absolute() and not root.exists():
        from ultralytics.utils import DATASETS_DIR

        root = DATASETS_DIR / root
    return root


def check_image_sources(yaml_path: Path, cfg: dict[str, Any]) -> None:
    """Raise a one-line error when the data YAML lacks names or a train/val image source does not exist."""
    if "names" not in cfg and "nc" not in cfg:
        raise PartialDataError(f"{yaml_path}: missing 'names': expected a class list or an index: name mapping")
    root = dataset_root(yaml_path, cfg)
    for split in ("train", "val"):
        if split not in cfg:
            raise PartialDataError(f"{yaml_path}: missing '{split}': expected an image folder or list file")
        sources = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
        for src in sources:
            p = Path(src) if Path(src).is_absolute() else root / src
            if not p.exists():
                how = (f"; `yolo-partial download data={yaml_path}` fetches them" if "download" in cfg
                       else "; the comments at the top of the YAML say how to obtain them")
                raise PartialDataError(
                    f"{yaml_path}: {split} images not found at {p}: expected an image folder or a .txt list of images{how}"
                )


def check_dropped_labels(dataset) -> None:
    """Raise a one-line error naming the first label file or image that Ultralytics' scan rejected as corrupt.

    Ultralytics drops such images with a warning; partially labelled data is scarce enough that a silently ignored
    file is a bug in the user's conversion, so it stops the run instead.
    """
    from ultralytics.data.utils import img2label_paths, verify_image_label

    kept = set(dataset.im_files)
    dropped = [f for f in dataset.get_img_files(dataset.img_path) if f not in kept]
    if not dropped:
        return
    im_file = dropped[0]
    lb_file = img2label_paths([im_file])[0]
    nc = len(dataset.data["names"])
    more = f" ({len(dropped) - 1} more files rejected)" if len(dropped) > 1 else ""
    problem = label_problem(Path(lb_file), nc) if Path(lb_file).is_file() else None
    if problem:
        raise PartialDataError(f"{lb_file}: malformed labels: {problem}; expected {LABEL_FORMAT}{more}")
    msg = verify_image_label((im_file, lb_file, "", False, nc, 0, 0, dataset.single_cls))[-1]
    reason = msg.split("ignoring corrupt image/label: ", 1)[-1].strip()
    raise PartialDataError(f"{im_file}: rejected image: {reason}{more}")


def label_problem(lb_file: Path, nc: int) -> str | None:
    """The first problem of a YOLO detection label file ('line N: ...'), or None when every line is valid."""
    for n, line in enumerate(lb_file.read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            return f"line {n} has {len(fields)} fields, not 5"
        try:
            cls, *xywh = (float(f) for f in fields)
        except ValueError:
            return f"line {n} has a non-numeric field"
        if not all(math.isfinite(v) for v in (cls, *xywh)):
            return f"line {n} has a NaN or infinite number"
        if cls != int(cls) or not 0 <= cls < nc:
            return f"line {n} has class {fields[0]}, outside [0, {nc})"
        bad = [v for v in xywh if not 0.0 <= v <= 1.0]
        if bad:
            return f"line {n} has coordinate {bad[0]:g} outside [0, 1]"
    return None
