"""LVIS v1 JSON (one split per call) -> YOLO layout plus partial.json; several calls fill one output folder.

LVIS is federated: each image is exhaustively annotated only for some categories. Per image, LVIS lists the
categories it has boxes of (implicitly, by its annotations), `not_exhaustive_category_ids` (some of their objects were
not boxed) and `neg_category_ids` (verified absent). partial.json says, per image:

    labeled_classes  = classes with boxes in the image, minus its not-exhaustive ones
    negative_classes = its neg_category_ids

so every other class is unknown there: neither the loss nor the partial-aware mAP treats it as background. (A class
listed as negative that does have boxes is kept as labelled and counted as 'negative with boxes'.)

The split's name comes from the JSON file name (lvis_v1_train.json -> train). LVIS v1 names images by `coco_url`
(.../train2017/000000391895.jpg), and its val set draws on both COCO train2017 and val2017, so images= is the COCO
images root holding train2017/ and val2017/; images are linked flat into out/images/<split>/. Class ids are the rank
of each category id (LVIS: 1..1203 -> 0..1202); boxes, missing images and counts are handled as in `convert coco`,
whose helpers this uses.

    convert_lvis("lvis_v1_val.json", "datasets/coco/images", "datasets/lvis")
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from ..errors import PartialDataError
from ..partial_labels import ImagePartial
from . import format_table
from .coco import image_labels, load_instances, read_categories, read_images, warn_left_out, write_split

COUNTS = (
    "images", "boxes", "empty", "zero-size", "unknown category", "unknown image id", "missing images",
    "boxes of missing images", "repeated ids", "labeled classes", "negative classes", "not exhaustive",
    "negative with boxes", "unknown listed category",
)  # fmt: skip


def image_files(data: dict, path: Path) -> None:
    """Give every image entry a 'file_name' relative to the COCO images root, from its coco_url (in place)."""
    for n, im in enumerate(data["images"]):
        url = im.get("coco_url") if isinstance(im, dict) else None
        if isinstance(url, str) and url:
            im["file_name"] = str(PurePosixPath(*PurePosixPath(urlparse(url).path).parts[-2:]))
        elif not isinstance(im, dict) or not isinstance(im.get("file_name"), str):
            raise PartialDataError(f"{path}: images[{n}] needs a 'coco_url' (or a 'file_name')")


def category_lists(data: dict, path: Path, cls_of: dict[int, int], stats: Counter) -> dict[int, tuple[set, set]]:
    """{image id: (not-exhaustive classes, negative classes)} from each image entry's LVIS lists."""
    lists = {}
    for n, im in enumerate(data["images"]):
        sets = []
        for key in ("not_exhaustive_category_ids", "neg_category_ids"):
            ids = im.get(key) or []
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise PartialDataError(f"{path}: images[{n}] '{key}' is not a list of category ids")
            stats["unknown listed category"] += sum(i not in cls_of for i in ids)
            sets.append({cls_of[i] for i in ids if i in cls_of})
        lists.setdefault(int(im["id"]), tuple(sets))  # a repeated id keeps its first entry, as read_images does
    return lists


def boxed_classes(data: dict, images: dict, cls_of: dict[int, int]) -> dict[int, set[int]]:
    """{image id: classes with at least one annotation}: LVIS' positive set, zero-size boxes included."""
    boxed: dict[int, set[int]] = {}
    for ann in data["annotations"]:  # image_labels has checked every annotation's fields
        image_id, cat = int(ann["image_id"]), int(ann["category_id"])
        if image_id in images and cat in cls_of:
            boxed.setdefault(image_id, set()).add(cls_of[cat])
    return boxed


def image_partials(images: dict, src: Path, boxed: dict, lists: dict, stats: Counter) -> dict[int, ImagePartial]:
    """One ImagePartial per image found in src: labelled = boxed minus not exhaustive, negative = negatives unboxed."""
    partial = {}
    for image_id, (name, _, _) in images.items():
        if not (src / name).is_file():  # left out of the output, and of the counts
            continue
        pos, (not_exhaustive, negative) = boxed.get(image_id, set()), lists[image_id]
        stats["negative with boxes"] += len(negative & pos)
        partial[image_id] = ImagePartial(pos - not_exhaustive, negative - pos)
        stats["labeled classes"] += len(pos - not_exhaustive)
        stats["negative classes"] += len(negative - pos)
        stats["not exhaustive"] += len(not_exhaustive & pos)
    return partial


def split_name(path: Path) -> str:
    """lvis_v1_train.json -> 'train', lvis_v0.5_val.json -> 'val'; any other name is used as it is."""
    return re.sub(r"^lvis_(v[\d.]+_)?", "", path.stem) or path.stem


def convert_lvis(annotations: str | Path, images: str | Path, out: str | Path) -> dict:
    """Convert one LVIS JSON into split `split_name(annotations)` of `out`, with its partial.json entries.

    Other splits already in `out` (from earlier calls) are kept with their partial.json entries; a split of the same
    name is replaced. The whole output folder is swapped in at once, so a failure changes nothing.

    Returns:
        (dict): 'split', the counts of COUNTS ('labeled classes', 'negative classes', 'not exhaustive' are summed
            over images) and 'splits' (all splits now in out).
    """
    from ultralytics.utils import LOGGER

    path, src, out = Path(annotations), Path(images), Path(out).expanduser().absolute()
    data = load_instances(path, "LVIS")
    if not src.is_dir():
        raise PartialDataError(f"images={src} is not a folder: expected the COCO images root (train2017/, val2017/)")
    split = split_name(path)
    cls_of, names = read_categories(data, path)
    image_files(data, path)
    entries, repeats = read_images(data, path)
    stats = Counter({"repeated ids": repeats})
    labels = image_labels(data, path, entries, cls_of, "skip", stats)  # LVIS has no crowd annotations
    lists = category_lists(data, path, cls_of, stats)
    partial = image_partials(entries, src, boxed_classes(data, entries, cls_of), lists, stats)
    splits, roles, missing = write_split(
        "convert lvis", path, src, out, split, names, entries, labels, partial, stats, {}
    )
    summary = {"split": split, **{k: stats[k] for k in COUNTS}, "splits": splits}
    warn_left_out("LVIS", split, src, missing, stats)
    if stats["unknown listed category"]:
        LOGGER.warning(f"LVIS {split}: {stats['unknown listed category']} unknown category ids in images' "
                       "not_exhaustive_category_ids / neg_category_ids left out")
    if stats["negative with boxes"]:
        LOGGER.warning(f"LVIS {split}: {stats['negative with boxes']} classes listed as negative in an image that has "
                       "boxes of them: kept as labelled, not negative")
    columns = ["images", "boxes", "empty", "zero-size", "missing images", "labeled classes", "negative classes",
               "not exhaustive"]  # fmt: skip
    LOGGER.info(f"LVIS {path.name} -> {out} (data.yaml: {roles})\n{format_table({split: stats}, columns)}")
    return summary
