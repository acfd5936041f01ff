"""`yolo-partial merge`: several datasets that each label some classes -> one dataset whose partial.json says so.

    yolo-partial merge data=people.yaml,cars.yaml[,...] out=DIR [names=union|ids]

Classes (`names=`):
  union  (default) the union of the sources' class names, matched case-insensitively; merged ids follow first
         appearance (the first source's classes keep their ids, each later source's new names follow in id order) and
         keep the first spelling. A source naming two classes the same up to case is a one-line error: both would
         become one class.
  ids    class ids must agree: where two sources both have id i, their names must match (case-insensitively), else a
         one-line error naming both YAMLs; the merged list is the longest, and labels keep their ids.

Output folder (written atomically; the sources are only read):
  <k>-<source root name>/...  source k's train/val/test images, linked per file at their path relative to its root
                              (images outside the root under _external/, as in `split`), labels remapped beside them
                              where Ultralytics looks, and its .txt image lists rewritten
  data.yaml                   train/val/test listing every source's entries, the merged names, `partial: partial.json`
  partial.json                each image labelled for its own source's classes only (images of a source that has
                              every merged class are not listed), intersected with the source's own `partial:` file:
                              its labelled classes, negatives and ignore boxes carry over, remapped
Images are not de-duplicated: a file present in two sources appears twice, each copy asserting its source's classes,
which is what each source says about it. Sources' `hidden:` manifests are not carried over. The same arguments give
byte-identical output.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ultralytics.utils import LOGGER

from .data import check_image_sources, dataset_root, load_yaml, local_data_yaml
from .errors import PartialConfigError, PartialDataError
from .fileio import atomic_dir
from .keys import check_known_keys
from .labels import class_names, data_yaml_text
from .partial_labels import ImagePartial, load_for_data, write_partial
from .split import is_image, linked_images, list_images, mirror, write_lists

MERGE_KEYS = {"data", "out", "names"}
NAME_MODES = ("union", "ids")
ROLES = ("train", "val", "test")


@dataclass
class Source:
    """One source dataset, its images as paths relative to the output folder."""

    yaml: Path
    names: dict[int, str]
    prefix: str  # its folder in the output, '<k>-<root name>'
    entries: dict[str, list[str]] = field(default_factory=dict)  # role -> its image sources relative to out
    images: dict[str, str] = field(default_factory=dict)  # path relative to out (POSIX) -> absolute source image
    lists: dict[str, list[str]] = field(default_factory=dict)  # list file relative to out -> its images, same form


def run_merge(args: dict[str, Any]) -> Path:
    """CLI entry: `args` holds data (comma-separated YAMLs or a list), out, names -> the merged data YAML path."""
    check_known_keys(args, MERGE_KEYS)
    data = args.get("data")
    data = [d.strip() for d in data.split(",") if d.strip()] if isinstance(data, str) else list(data or [])
    if len(data) < 2:
        raise PartialConfigError(
            f"merge needs data=A.yaml,B.yaml[,...] (two or more data YAMLs), got data={args.get('data')}")
    if not args.get("out"):
        raise PartialConfigError("merge needs out=DIR: expected the folder to write the merged dataset to")
    return merge_datasets([local_data_yaml(str(d)) for d in data], str(args["out"]), args.get("names") or "union")


def merge_datasets(data: Sequence[str | Path], out: str | Path, names: str = "union") -> Path:
    """Merge data YAMLs `data` into folder `out` -> the new data YAML's path (see the module docstring)."""
    if names not in NAME_MODES:
        raise PartialConfigError(f"names={names} is invalid: expected one of {'|'.join(NAME_MODES)}")
    out = Path(out).expanduser().absolute()
    sources = [load_source(Path(d).expanduser().absolute(), k, out) for k, d in enumerate(data)]
    merged, remaps = merge_names(sources, names)
    producer = {"command": "merge", "data": [str(s.yaml) for s in sources], "names": names}
    with atomic_dir(out, producer) as tmp:
        entries, counts = {}, []
        for src, remap in zip(sources, remaps):
            counts.append(write_source(tmp, out, src, remap))
            entries.update(source_partial(src, remap, len(merged)))
            write_lists(tmp, src.lists)
        write_partial(tmp / "partial.json", entries, [merged[i] for i in range(len(merged))],
                      source=[str(s.yaml) for s in sources])
        (tmp / "data.yaml").write_text(data_yaml(sources, merged, names), encoding="utf-8")
    log_summary(out, sources, remaps, merged, counts, len(entries))
    return out / "data.yaml"


def load_source(yaml_path: Path, k: int, out: Path) -> Source:
    """Read source k's YAML and collect its train/val/test images, mirrored under '<k>-<root name>'."""
    cfg = load_yaml(yaml_path, "data YAML")
    check_image_sources(yaml_path, cfg)
    root = dataset_root(yaml_path, cfg).resolve()
    if out.resolve().is_relative_to(root):
        raise PartialDataError(f"out={out} is inside the source dataset {root}: expected a folder outside it")
    src = Source(yaml_path, class_names(yaml_path, cfg), f"{k}-{root.name}")
    for role in ROLES:
        if cfg.get(role):
            values = cfg[role] if isinstance(cfg[role], list) else [cfg[role]]
            src.entries[role] = [collect(src, yaml_path, role, str((root / str(v)).resolve()), str(root))
                                 for v in values]
    src.images = dict(sorted(src.images.items()))
    return src


def collect(src: Source, yaml_path: Path, role: str, path: str, root: str) -> str:
    """Add the images of one image source (folder or .txt list) to `src` -> its entry relative to the output."""
    if os.path.isdir(path):
        images = [f for f in glob.iglob(os.path.join(glob.escape(path), "**", "*.*"), recursive=True) if is_image(f)]
    else:
        images = list_images(Path(path))
    if not images:
        raise PartialDataError(f"{yaml_path}: no {role} images in {path}: expected image files")
    entry = posixpath.join(src.prefix, mirror(path, root))
    rels = [posixpath.join(src.prefix, mirror(im, root)) for im in images]
    if not os.path.isdir(path):
        src.lists[entry] = rels
    src.images.update(zip(rels, images))
    return entry


def merge_names(sources: list[Source], mode: str) -> tuple[dict[int, str], list[np.ndarray]]:
    """The merged {id: name} and, per source, its old id -> merged id array."""
    if mode == "ids":
        return merge_by_id(sources)
    merged: dict[str, int] = {}  # casefolded name -> merged id
    spelling: dict[int, str] = {}
    remaps = []
    for src in sources:
        seen: dict[str, int] = {}
        for i, name in src.names.items():
            key = name.casefold()
            if key in seen:
                raise PartialDataError(f"{src.yaml}: classes {seen[key]} '{src.names[seen[key]]}' and {i} '{name}' are "
                                       "the same name up to case: merge matches names case-insensitively, so both "
                                       "would be one class; expected distinct names")
            seen[key] = i
            if key not in merged:
                merged[key] = len(merged)
                spelling[merged[key]] = name
        remaps.append(np.array([merged[src.names[i].casefold()] for i in range(len(src.names))], np.int64))
    return spelling, remaps


def merge_by_id(sources: list[Source]) -> tuple[dict[int, str], list[np.ndarray]]:
    """names=ids: the sources' ids must name the same classes wherever they overlap; labels keep their ids."""
    merged: dict[int, tuple[str, Path]] = {}
    for src in sources:
        for i, name in src.names.items():
            if i in merged and merged[i][0].casefold() != name.casefold():
                raise PartialDataError(f"{src.yaml}: class {i} is '{name}' but {merged[i][1]} names class {i} "
                                       f"'{merged[i][0]}': with names=ids the ids must agree (names=union matches "
                                       "classes by name instead)")
            merged.setdefault(i, (name, src.yaml))
    return {i: merged[i][0] for i in sorted(merged)}, [np.arange(len(s.names), dtype=np.int64) for s in sources]


def write_source(tmp: Path, out: Path, src: Source, remap: np.ndarray) -> dict[str, int]:
    """Link one source's images into tmp and write their labels with merged class ids -> image and box counts."""
    n_boxes = 0
    for _, _, label_dst, rows in linked_images(tmp, out, src.images, len(src.names), f"image of {src.yaml}"):
        if rows is None:  # a background image: no label file, as in the source
            continue
        with open(label_dst, "w", encoding="utf-8") as f:
            f.write("".join(f"{remap[c]} {' '.join(line.split()[1:])}\n" for line, c, _ in rows))
        n_boxes += len(rows)
    return {"images": len(src.images), "boxes": n_boxes}


def source_partial(src: Source, remap: np.ndarray, nc: int) -> dict[str, ImagePartial]:
    """partial.json entries of one source's images: labelled for its classes only, within its own partial file."""
    own = set(remap.tolist())
    partial = load_for_data(src.yaml, list(src.images.values()))
    entries = {}
    for rel, image in src.images.items():
        p = partial.for_image(image) if partial is not None else None
        if p is None:
            entry = ImagePartial(None if len(own) == nc else own)
        else:  # the source's lists are about its classes: remap them; its ignore boxes are the same image regions
            negative = {int(remap[c]) for c in p.negative}
            labeled = own - negative if p.labeled is None else {int(remap[c]) for c in p.labeled}
            entry = ImagePartial(None if len(labeled) == nc else labeled, negative, p.ignore)
        if entry.to_json():  # an entry asserting everything is left out, like an unlisted image
            entries[rel] = entry
    return entries


def data_yaml(sources: list[Source], names: dict[int, str], mode: str) -> str:
    """The merged data YAML text: each role lists every source's entries; no `path:`, so the folder can move."""
    fields: dict[str, Any] = {}
    for role in ROLES:
        values = [e for s in sources for e in s.entries.get(role, [])]
        if values:
            fields[role] = values[0] if len(values) == 1 else values
    fields["partial"] = "partial.json"
    comment = (f"# yolo-partial merge of {json.dumps([str(s.yaml) for s in sources])} (names={mode})\n"
               "# Each image is labelled for its source's classes only; partial.json says which.\n")
    return data_yaml_text(fields, names, comment)


def log_summary(out: Path, sources: list[Source], remaps: list[np.ndarray], names: dict[int, str],
                counts: list[dict[str, int]], n_partial: int) -> None:
    """Print per source its images, boxes and where its classes went."""
    for src, remap, c in zip(sources, remaps, counts):
        moved = sum(int(remap[i]) != i for i in range(len(remap)))
        LOGGER.info(f"merge: {src.prefix} ({src.yaml}): {c['images']} images, {c['boxes']} boxes, "
                    f"{len(remap)} classes ({moved} renumbered)")
    LOGGER.info(f"merge written to {out}: {len(names)} classes, {n_partial} images listed in partial.json "
                f"(data YAML {out / 'data.yaml'})")
