"""The YAMLs yolo-partial ships: the repository's top-level cfg/ (with cfg/models/) and data/ folders, installed as
the packages yolo_partial.assets.cfg and yolo_partial.assets.data (see pyproject.toml) and read through
importlib.resources, so a clone, an editable install and a wheel resolve them the same way."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

KINDS = ("cfg", "models", "data")
_PACKAGES = {"cfg": "yolo_partial.assets.cfg", "models": "yolo_partial.assets.cfg", "data": "yolo_partial.assets.data"}


def folder(kind: str) -> Path:
    """The installed folder of one kind of shipped YAML: 'cfg' (method cfgs), 'models' (model YAMLs) or 'data'."""
    root: Traversable = files(_PACKAGES[kind])
    root = root / "models" if kind == "models" else root
    return Path(str(root))


def shipped(kind: str) -> dict[str, Path]:
    """{file name: path} of the shipped YAMLs of one kind."""
    return {p.name: p for p in sorted(folder(kind).glob("*.yaml"))}


def find(kind: str, name: str) -> Path | None:
    """The shipped YAML of one kind named `name`, with or without its .yaml suffix, else None."""
    name = Path(str(name)).name
    files_ = shipped(kind)
    return files_.get(name) or files_.get(f"{name}.yaml")


def resolve(kind: str, name: str | Path) -> Path | None:
    """An existing path as given, else the shipped YAML that `name` names, else None.

    A shipped name may be bare ('brl', 'brl.yaml') or written as in a clone ('cfg/brl.yaml', 'data/dusia.yaml',
    'cfg/models/yolov5n-obj.yaml'), so README's commands work from any folder; a path into any other folder is taken as
    the user's own and not replaced.
    """
    p = Path(str(name))
    if p.exists():
        return p
    if p.parent.as_posix() in {".", "cfg", "data", "cfg/models", "models"}:
        return find(kind, p.name)
    return None


def names(kind: str) -> str:
    """The shipped YAMLs of one kind as one comma-separated string, for error messages."""
    return ", ".join(shipped(kind))
