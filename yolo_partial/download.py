"""`yolo-partial download data=X.yaml`: fetch and convert a dataset by running its data YAML's `download:` script.

This is the only command that uses the network, and only when asked; training never downloads data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ultralytics.utils import LOGGER

from .data import check_image_sources, dataset_root, find_data_yaml, load_yaml
from .errors import PartialDataError


def download_dataset(data: str | Path) -> Path:
    """Run the `download:` script of data YAML `data` unless its images are already there -> the dataset folder.

    The script sees `yaml`, the YAML's mapping with `path` made absolute (Ultralytics' convention for these scripts).
    """
    path = find_data_yaml(data)
    cfg = load_yaml(path, "data YAML")
    if "download" not in cfg:
        raise PartialDataError(f"{path}: no 'download:' section: the comments at its top say how to obtain the data")
    root = dataset_root(path, cfg).absolute()
    try:
        check_image_sources(path, cfg)
        LOGGER.info(f"{path}: images already present under {root}, nothing to download")
        return root
    except PartialDataError:
        pass
    LOGGER.info(f"{path}: fetching into {root} (needs internet)...")
    before = set(root.parent.iterdir()) if root.parent.is_dir() else set()
    try:
        exec(cfg["download"], {"yaml": {**cfg, "path": str(root)}})  # noqa: S102 - the YAML's own script
    except Exception as e:  # network, disk or archive errors from the script: one line, not a traceback
        remove_empty_new(root.parent, before)
        if isinstance(e, PartialDataError):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PartialDataError(f"{path}: download failed: {type(e).__name__}: {first}") from e
    check_image_sources(path, cfg)
    return root


def remove_empty_new(parent: Path, before: set[Path]) -> None:
    """Remove the folders a failed download created under `parent` that hold no file (at any depth): a failed download
    leaves nothing behind, while partial downloads (files) stay for Ultralytics' scripts to resume."""
    if not parent.is_dir():
        return
    for p in set(parent.iterdir()) - before:
        if p.is_dir() and not any(f.is_file() for f in p.rglob("*")):
            shutil.rmtree(p, ignore_errors=True)


def run_download(args: dict) -> None:
    """CLI entry: `yolo-partial download data=X.yaml`."""
    from .keys import check_known_keys

    check_known_keys(args, {"data"})
    if not args.get("data"):
        raise PartialDataError("download needs data=X.yaml: expected a data YAML with a download: section, e.g. data=voc")
    LOGGER.info(f"dataset ready at {download_dataset(args['data'])}")
