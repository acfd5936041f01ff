"""Class-partial labels and ignore regions: the per-image `partial:` annotation file of a dataset.

A data YAML names the file with a top-level key, relative to the dataset root like `train:` and `hidden:`::

    path: datasets/merged
    train: images/train
    val: images/val
    partial: partial.json

One file covers the train, val and test images. Schema (JSON)::

    {"format": "yolo-partial-annotation/1",          optional; when present it must be this string
     "names": ["person", "car", ...],                  optional; when present it must equal the data YAML's names
     "images": {
       "images/train/a.jpg": {"labeled_classes": [0, "car"], "negative_classes": [5], "ignore": [[cx, cy, w, h]]},
       "images/val/b.jpg": {"ignore": [[0.5, 0.5, 0.2, 0.1]]},
       ...}}

Each key of `images` is an image path relative to the dataset root (POSIX; an absolute path names an image outside
the root, e.g. the source val images of a `split` output). Every field of an entry is optional:

  labeled_classes   classes exhaustively boxed in this image (ids or names, names matched case-insensitively).
                    Absent: every class is labelled. [] : no class is (only `negative_classes` are asserted).
  negative_classes  classes verified absent from this image (it has no box of them, and none is missing).
  ignore            boxes, normalised [cx, cy, w, h] like label lines, where nothing is asserted about any class
                    (crowds, "don't care" regions): no background is learned there and detections there are not
                    false alarms.

Images not listed are fully labelled. So the background of class c is *asserted* in an image when c is labelled or
verified negative there (or the image has no `labeled_classes`), outside its ignore boxes.

Validation on load (one-line `PartialDataError`s naming the file): malformed JSON, a foreign `format`, `names` that
differ from the dataset's, an unknown entry key (a misspelt key would silently make an image fully labelled), an
unknown class id or name, a class both labelled and negative, an image listed twice (two keys for one file), an image
the dataset does not have (when the dataset's image list is given), and ignore boxes that are not 4 finite numbers in
[0, 1]. An ignore box with zero width or height covers no pixel, so it asserts nothing either way: it is dropped with
one counted warning naming the file, like a zero-area label box.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import PartialDataError

FORMAT = "yolo-partial-annotation/1"
KEYS = ("labeled_classes", "negative_classes", "ignore")
SCHEMA = ('{"images": {"<image path relative to the dataset root>": {"labeled_classes": [id or name, ...], '
          '"negative_classes": [...], "ignore": [[cx, cy, w, h], ...]}}}')
_NO_BOXES = np.zeros((0, 4), np.float32)


class _Pairs(list):
    """A JSON object read as its (key, value) pairs, so that a key written twice can be refused, not silently lost."""


@dataclass(eq=False)
class ImagePartial:
    """What one image's labels assert.

    Attributes:
        labeled (set[int] | None): Classes exhaustively boxed; None means every class.
        negative (set[int]): Classes verified absent.
        ignore (np.ndarray): (n, 4) float32 normalised xywh boxes where nothing is asserted.
    """

    labeled: set[int] | None = None
    negative: set[int] = field(default_factory=set)
    ignore: np.ndarray = field(default_factory=lambda: _NO_BOXES.copy())

    def __post_init__(self):
        self.labeled = None if self.labeled is None else set(self.labeled)
        self.negative = set(self.negative)
        self.ignore = np.asarray(self.ignore, np.float32).reshape(-1, 4)

    def __eq__(self, other) -> bool:
        return (isinstance(other, ImagePartial) and self.labeled == other.labeled and self.negative == other.negative
                and np.array_equal(self.ignore, other.ignore))

    @property
    def is_full(self) -> bool:
        """Whether the entry asserts what a fully labelled image does (nothing partial about it)."""
        return self.labeled is None and not len(self.ignore)

    def asserted(self, nc: int) -> np.ndarray:
        """(nc,) bool: classes whose background this image asserts (labelled, verified negative, or all)."""
        mask = np.zeros(nc, bool)
        if self.labeled is None:
            mask[:] = True
        else:
            mask[sorted(self.labeled | self.negative)] = True
        return mask

    def explicit(self, nc: int) -> np.ndarray:
        """(nc,) bool: classes the entry names, labelled or verified negative. Without `labeled_classes` the image makes
        the claim of any YOLO label file (every class boxed), which the random-partial methods exist to doubt, so only
        its negatives are explicit."""
        mask = np.zeros(nc, bool)
        mask[sorted((self.labeled or set()) | self.negative)] = True
        return mask

    def to_json(self) -> dict[str, Any]:
        """The entry as written in the file: only fields that differ from 'fully labelled', classes sorted."""
        entry: dict[str, Any] = {}
        if self.labeled is not None:
            entry["labeled_classes"] = sorted(self.labeled)
        if self.negative:
            entry["negative_classes"] = sorted(self.negative)
        if len(self.ignore):
            entry["ignore"] = [[round(float(v), 6) for v in box] for box in self.ignore]
        return entry


def image_key(im_file: str | Path) -> str:
    """Lookup key of an image path: absolute, with its folder's symlinks resolved but not the file itself.

    Ultralytics resolves the image folder of a data YAML and globs inside it, so its `im_files` have real folders;
    the files themselves are often per-file links (split and merge outputs), and two of them may link to one source
    image with different labels, so the file name is kept as it is.
    """
    path = os.path.abspath(im_file)
    folder, name = os.path.split(path)
    return os.path.join(_realdir(folder), name)


@lru_cache(maxsize=1 << 16)
def _realdir(folder: str) -> str:
    """os.path.realpath of a folder, cached: a partial file lists up to millions of images in few folders."""
    return os.path.realpath(folder)


@dataclass
class PartialLabels:
    """A loaded `partial:` file.

    Attributes:
        path (Path): The file.
        root (Path): The folder its image paths are relative to (the dataset root).
        names (dict[int, str]): The dataset's classes.
        entries (dict[str, ImagePartial]): {image path as written in the file: entry}, in file order.
        dropped (int): Zero-area ignore boxes dropped on load.
    """

    path: Path
    root: Path
    names: dict[int, str]
    entries: dict[str, ImagePartial] = field(default_factory=dict)
    dropped: int = 0
    by_key: dict[str, ImagePartial] = field(default_factory=dict, repr=False)

    def for_image(self, im_file: str | Path) -> ImagePartial | None:
        """The entry of one image (any path form of the same file), or None when the image is fully labelled."""
        return self.by_key.get(image_key(im_file))

    def __len__(self) -> int:
        return len(self.entries)

    def lists(self, im_files: Iterable[str | Path]) -> bool:
        """Whether any of `im_files` has an entry (e.g. whether the val images are partial at all)."""
        return any(image_key(f) in self.by_key for f in im_files)


def find_partial(data_yaml: str | Path) -> Path | None:
    """The file named by a data YAML's top-level `partial:` key (relative to the dataset root), or None."""
    from .data import dataset_file

    return dataset_file(data_yaml, "partial", f"a {FORMAT} JSON file")


def load_for_data(data_yaml: str | Path, images: list[str] | None = None) -> PartialLabels | None:
    """The `partial:` file of a data YAML, loaded with its classes and dataset root, or None when it names none."""
    from .data import dataset_root, load_yaml
    from .labels import class_names

    path = find_partial(data_yaml)
    if path is None:
        return None
    cfg = load_yaml(data_yaml, "data YAML")
    return load_partial(path, class_names(data_yaml, cfg), images, root=dataset_root(Path(data_yaml), cfg))


def partial_for_data(data: Any, dataset: Mapping[str, Any] | None = None) -> PartialLabels | None:
    """The loaded `partial:` file of a data YAML path (what the trainer and validator decide from), or None for a data
    YAML without one and for other data sources (Ultralytics' own names, archives). With `dataset` (Ultralytics'
    resolved data dict, e.g. a trainer's `data`), every image the file names must be one of its images."""
    if not isinstance(data, (str, Path)) or Path(data).suffix not in {".yaml", ".yml"} or not Path(data).is_file():
        return None
    if find_partial(data) is None:
        return None
    return load_for_data(data, None if dataset is None else dataset_images(dataset))


def dataset_images(dataset: Mapping[str, Any]) -> list[str]:
    """The train/val/test image paths of a resolved data dict, listed as Ultralytics lists them (folders searched
    recursively, .txt lists read with './' relative to the list's folder)."""
    from ultralytics.data.utils import IMG_FORMATS

    files: list[str] = []
    for key in ("train", "val", "test", "minival"):
        values = dataset.get(key)
        for v in values if isinstance(values, (list, tuple)) else [values]:
            if not v:
                continue
            p = Path(str(v))
            if p.is_dir():
                files += [str(f) for f in p.rglob("*.*")]
            elif p.is_file() and p.suffix == ".txt":
                lines = p.read_text(encoding="utf-8-sig").splitlines()
                files += [str(p.parent / x[2:]) if x.startswith("./") else x for x in (ln.strip() for ln in lines)]
    return [f for f in files if f.rpartition(".")[-1].lower() in IMG_FORMATS]


def load_partial(path: str | Path, names: dict[int, str], images: list[str] | None = None,
                 root: str | Path | None = None) -> PartialLabels:
    """Read and validate a `partial:` file -> PartialLabels; one-line PartialDataError naming the file.

    Args:
        path: the JSON file.
        names: the dataset's {class id: name}.
        images: the dataset's image paths (train, val and test); when given, every listed image must be one of them.
        root: the dataset root, which the image paths are relative to; default the file's folder (where the tools
            write it). `load_for_data` passes the data YAML's root.
    """
    path = Path(path)
    data = _read_json(path)
    root = Path(os.path.abspath(root if root is not None else path.parent))
    _check_header(path, data, names)
    lookup = _class_lookup(names)
    out = PartialLabels(path, root, dict(names))
    for rel, entry in data["images"]:
        where = f"{path}: images[{json.dumps(rel)}]"
        if not isinstance(rel, str) or not rel:
            raise PartialDataError(f"{path}: an image key is empty: expected {SCHEMA}")
        parsed, dropped = _parse_entry(where, entry, lookup, len(names))
        key = image_key(root / rel)
        if key in out.by_key:
            raise PartialDataError(f"{where} names an image listed before: expected each image once")
        out.entries[rel], out.by_key[key] = parsed, parsed
        out.dropped += dropped
    if images is not None:
        _check_images(path, out, images)
    if out.dropped:
        from ultralytics.utils import LOGGER

        LOGGER.warning(f"{path}: {out.dropped} ignore boxes with zero width or height dropped (they cover nothing)")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    """The file's top-level object with `images` as a list of (key, entry) pairs (repeated keys kept, to refuse)."""
    if not path.is_file():
        raise PartialDataError(f"partial annotation file not found: {path}")
    try:
        data = json.loads(path.read_bytes(), object_pairs_hook=_Pairs)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise PartialDataError(f"{path}: malformed JSON{where}: expected {SCHEMA}") from None
    if not isinstance(data, _Pairs):
        raise PartialDataError(f"{path}: expected a JSON object {SCHEMA}")
    top = dict(data)
    images = top.get("images")
    if not isinstance(images, _Pairs):
        raise PartialDataError(f"{path}: 'images' is missing or not an object: expected {SCHEMA}")
    top["images"] = images
    return top


def _check_header(path: Path, data: dict[str, Any], names: dict[int, str]) -> None:
    """Refuse a foreign format string, or a `names` list written for other classes than the dataset's."""
    found = data.get("format", FORMAT)
    if found != FORMAT:
        raise PartialDataError(f"{path}: format {found!r}: expected '{FORMAT}'")
    written, ours = data.get("names"), [names[i] for i in range(len(names))]
    same = isinstance(written, list) and [str(n).casefold() for n in written] == [n.casefold() for n in ours]
    if written is not None and not same:  # names are matched case-insensitively everywhere else too
        raise PartialDataError(f"{path}: written for classes {written}, but the dataset names {ours}: class ids "
                               "would mean other classes")


def _class_lookup(names: dict[int, str]) -> dict[Any, int]:
    """{id: id, casefolded name: id}: what a class may be written as."""
    lookup: dict[Any, int] = {i: i for i in names}
    lookup.update((str(n).casefold(), i) for i, n in names.items())
    return lookup


def _parse_entry(where: str, entry: Any, lookup: dict[Any, int], nc: int) -> tuple[ImagePartial, int]:
    """One image entry (a pair list) -> (ImagePartial, zero-area ignore boxes dropped)."""
    if not isinstance(entry, _Pairs):
        raise PartialDataError(f"{where} is not an object: expected {{\"labeled_classes\": [...], ...}} or {{}}")
    fields = dict(entry)
    for key in fields:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f": expected {', '.join(KEYS)}"
            raise PartialDataError(f"{where} has unknown key {key!r}{hint}")
    labeled = None if fields.get("labeled_classes") is None else _classes(where, fields, "labeled_classes", lookup, nc)
    negative = _classes(where, fields, "negative_classes", lookup, nc) if fields.get("negative_classes") else set()
    both = sorted((labeled or set()) & negative)
    if both:
        raise PartialDataError(f"{where}: class {both[0]} is both labelled and negative: expected one or the other")
    ignore = _boxes(where, fields.get("ignore") or [])
    keep = (ignore[:, 2] > 0) & (ignore[:, 3] > 0)
    return ImagePartial(labeled, negative, ignore[keep]), int((~keep).sum())


def _classes(where: str, fields: dict, key: str, lookup: dict[Any, int], nc: int) -> set[int]:
    """The class ids of one class list, from ids or (case-insensitive) names."""
    values = fields[key]
    if not isinstance(values, list):
        raise PartialDataError(f"{where}: {key} is not a list: expected class ids or names")
    ids = set()
    for v in values:
        k = v.casefold() if isinstance(v, str) else v if isinstance(v, int) and not isinstance(v, bool) else None
        if k is None or k not in lookup:
            raise PartialDataError(f"{where}: {key} has unknown class {v!r}: expected an id in [0, {nc}) or a name "
                                   "of the data YAML")
        ids.add(lookup[k])
    return ids


def _boxes(where: str, boxes: Any) -> np.ndarray:
    """Ignore boxes -> (n, 4) float32; each must be 4 finite numbers in [0, 1], like a label line's coordinates."""
    if not isinstance(boxes, list):
        raise PartialDataError(f"{where}: ignore is not a list: expected [[cx, cy, w, h], ...] normalised")
    for n, box in enumerate(boxes):
        ok = isinstance(box, list) and len(box) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
        if not ok or not all(0 <= v <= 1 for v in box):
            raise PartialDataError(f"{where}: ignore[{n}] is {json.dumps(box)}: expected [cx, cy, w, h], 4 numbers "
                                   "in [0, 1]")
    return np.array(boxes, np.float32).reshape(-1, 4)


def _check_images(path: Path, out: PartialLabels, images: list[str]) -> None:
    """Refuse entries naming images the dataset does not have, naming the first and counting them."""
    known = {image_key(f) for f in images}
    unknown = [rel for rel, key in zip(out.entries, out.by_key) if key not in known]
    if unknown:
        more = f" ({len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise PartialDataError(f"{path}: image {json.dumps(unknown[0])}{more} is not an image of the dataset: expected "
                               f"paths relative to {out.root}")


def write_partial(path: str | Path, entries: Mapping[str, ImagePartial | dict], names: Sequence[str] | None = None,
                  **header: Any) -> None:
    """Write a `partial:` file atomically: sorted image keys, one line each, entries that assert everything left out.

    Args:
        path: the file to write.
        entries: {image path relative to the dataset root: ImagePartial or a dict in the file's schema}.
        names: the dataset's class names in id order, written so that loading with other classes is refused.
        header: further top-level keys (e.g. source=...), written before `images`.
    """
    from .fileio import write_text_atomic

    top = {"format": FORMAT, **({"names": list(names)} if names is not None else {}), **header}
    lines = []
    for rel in sorted(entries):
        e = entries[rel]
        e = e.to_json() if isinstance(e, ImagePartial) else {k: v for k, v in e.items() if v is not None}
        if e:
            lines.append(f" {json.dumps(rel, ensure_ascii=False)}: {json.dumps(e, ensure_ascii=False)}")
    head = json.dumps(top, ensure_ascii=False)[:-1]
    write_text_atomic(path, head + ', "images": {\n' + ",\n".join(lines) + ("\n" if lines else "") + "}}\n")


def class_mask(partial_rows: Sequence[ImagePartial | None], nc: int, device=None):
    """Which background terms are asserted, per row (e.g. per image of a batch): True where class c is labelled or
    verified negative in the row's image, or the image is fully labelled (None or no `labeled`).

    Args:
        partial_rows: n entries, ImagePartial or None.
        nc: number of classes C.
        device: torch device of the result.

    Returns:
        (torch.Tensor): (n, C) bool.
    """
    import torch

    mask = np.ones((len(partial_rows), nc), bool)
    for i, p in enumerate(partial_rows):
        if p is not None and p.labeled is not None:
            mask[i] = p.asserted(nc)
    return torch.from_numpy(mask).to(device)
