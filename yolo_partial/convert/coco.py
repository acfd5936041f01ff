"""COCO instances JSON (one split per call) -> YOLO layout; several calls fill one output folder.

The split's name comes from the JSON file name (instances_val2017.json -> val2017). Class ids are the rank of each
category id among the JSON's categories sorted by id, so COCO's 80 categories map to 0..79 as in Ultralytics'
coco.yaml. Boxes [x, y, w, h] (top-left pixels) become normalised centre boxes clipped to the image. Crowd regions are
skipped by default, like Ultralytics' own converter; crowd=keep writes them as ordinary boxes; crowd=ignore writes
them as ignore boxes of their image into out/partial.json (and `partial: partial.json` into data.yaml), so that
neither the loss nor the partial-aware mAP treats a crowd as background. Images listed in the JSON but absent from
images= are left out with a warning (an error if none is found: images= is then wrong).

`write_split` (shared with the LVIS converter) writes one split into the output folder, carrying the other splits,
and their partial.json entries, over from an earlier run.

    convert_coco("annotations/instances_val2017.json", "val2017", "datasets/coco2017")
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

from ..errors import PartialDataError
from ..data import load_yaml
from ..labels import data_yaml_text
from ..fileio import MARKER, atomic_dir, hardlink_or_copy, link_image
from ..partial_labels import ImagePartial, load_partial, write_partial
from . import format_table, yolo_line

CROWD = ("skip", "keep", "ignore")
COUNTS = (
    "images", "boxes", "empty", "crowd skipped", "crowd kept", "crowd ignored", "zero-size", "unknown category",
    "unknown image id", "missing images", "boxes of missing images", "repeated ids",
)  # fmt: skip
PARTIAL = "partial.json"
ROLES = ("train", "val", "test")  # data.yaml key -> the first split (sorted) whose name contains it


def load_instances(path: Path, what: str = "COCO instances") -> dict:
    """Read a COCO-style (COCO, LVIS) instances JSON -> its dict, with one-line errors naming the file."""
    if not path.is_file():
        name = "COCO instances_<split>.json" if what == "COCO instances" else f"{what} JSON"
        raise PartialDataError(f"annotations={path} not found: expected a {name} file")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise PartialDataError(f"{path}: malformed JSON{where}: expected a {what} file") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise PartialDataError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories' lists")
    return data


def read_categories(data: dict, path: Path) -> tuple[dict[int, int], list[str]]:
    """Categories sorted by id -> ({category id: class index}, names)."""
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
    except (KeyError, TypeError, ValueError):
        raise PartialDataError(f"{path}: every category needs an integer 'id' and a 'name'") from None
    ids = [i for i, _ in cats]
    if len(set(ids)) != len(ids):
        raise PartialDataError(f"{path}: category ids repeat: expected each id once")
    return {i: k for k, i in enumerate(ids)}, [name for _, name in cats]


def read_images(data: dict, path: Path) -> tuple[dict[int, tuple[str, int, int]], int]:
    """Image entries by id -> ({id: (file_name, width, height)}, repeated ids dropped); later repeats are ignored."""
    images, stems = {}, set()
    for n, im in enumerate(data["images"]):
        try:
            key, entry = int(im["id"]), (str(im["file_name"]), int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError):
            raise PartialDataError(
                f"{path}: images[{n}] needs an integer 'id', 'width', 'height' and a 'file_name'"
            ) from None
        if key in images:
            continue
        if min(entry[1:]) <= 0 or Path(entry[0]).stem in stems:  # the stem names the label file
            raise PartialDataError(f"{path}: images[{n}] ({entry[0]}): expected a positive size and a unique file name")
        images[key] = entry
        stems.add(Path(entry[0]).stem)
    return images, len(data["images"]) - len(images)


def image_labels(
    data: dict, path: Path, images: dict, cls_of: dict, crowd: str, stats: Counter, regions: dict | None = None
) -> dict[int, list[str]]:
    """YOLO label lines per image id, in the JSON's annotation order; tallies kept and skipped boxes in `stats`.

    With crowd='ignore', crowd boxes go to `regions` instead ({image id: [[cx, cy, w, h], ...]} normalised, clipped).
    """
    labels = defaultdict(list)
    for n, ann in enumerate(data["annotations"]):
        try:
            image_id, cat, bbox = int(ann["image_id"]), int(ann["category_id"]), [float(v) for v in ann["bbox"]]
            x, y, w, h = bbox
        except (KeyError, TypeError, ValueError):
            raise PartialDataError(
                f"{path}: annotations[{n}] needs an 'image_id', a 'category_id' and 'bbox' [x, y, w, h]"
            ) from None
        is_crowd = bool(ann.get("iscrowd", 0))
        if image_id not in images:
            stats["unknown image id"] += 1
        elif cat not in cls_of:
            stats["unknown category"] += 1
        elif is_crowd and crowd == "skip":
            stats["crowd skipped"] += 1
        elif not (line := yolo_line(cls_of[cat], (x, y, x + w, y + h), images[image_id][1:])):
            stats["zero-size"] += 1
        elif is_crowd and crowd == "ignore":
            regions.setdefault(image_id, []).append([float(v) for v in line.split()[1:]])
            stats["crowd ignored"] += 1
        else:
            labels[image_id].append(line)
            stats["crowd kept"] += is_crowd
    return labels


def earlier_output(
    out: Path, split: str, names: list[str], path: Path, command: str = "convert coco"
) -> tuple[dict, list[str]]:
    """An earlier `command` output in `out` -> (its marker's splits, the other splits to carry over).

    Raises a one-line error when `out` holds another converter's output or splits with different class names.
    """
    if not (out / MARKER).is_file():
        return {}, []
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        marker = {}
    if marker.get("command") != command:
        kind = command.split()[-1].upper()
        raise PartialDataError(
            f"out={out} holds a '{marker.get('command')}' output: expected a new folder or a {kind} one"
        )
    others = sorted(p.name for p in (out / "labels").glob("*") if p.is_dir() and p.name != split)
    old_names = load_yaml(out / "data.yaml", "data YAML").get("names", {}) if (out / "data.yaml").is_file() else {}
    if others and list(old_names.values()) != names:
        raise PartialDataError(f"{path}: its categories differ from those of the splits {others} already in out={out}")
    return {s: v for s, v in marker.get("splits", {}).items() if s in others}, others


def split_roles(splits: list[str]) -> dict[str, str]:
    """data.yaml's train/val/test entries: per role, the split whose name starts with it, else the first containing it.

    ['train2017', 'val2017'] -> {'train': 'images/train2017', 'val': 'images/val2017'}; a role without split is omitted.
    """
    roles = {}
    for role in ROLES:
        candidates = sorted((not s.startswith(role), s) for s in splits if role in s)
        if candidates:
            roles[role] = f"images/{candidates[0][1]}"
    return roles


def carried_partial(out: Path, others: list[str], names: list[str]) -> dict[str, ImagePartial] | None:
    """The partial.json entries of the splits carried over from an earlier output (None when it wrote none)."""
    if not others or not (out / PARTIAL).is_file():
        return None
    old = load_partial(out / PARTIAL, dict(enumerate(names)))
    keep = tuple(f"images/{other}/" for other in others)
    return {rel: e for rel, e in old.entries.items() if rel.startswith(keep)}


def write_split(
    command: str, path: Path, src: Path, out: Path, split: str, names: list[str], entries: dict,
    labels: dict[int, list[str]], partial: dict[int, ImagePartial] | None, stats: Counter, options: dict,
) -> tuple[list[str], dict[str, str], list[str]]:
    """Write split `split` (images linked, labels, its partial entries) into `out`, keeping its other splits.

    Args:
        entries: {image id: (file name relative to `src`, width, height)}; images are written flat by file name.
        labels: YOLO lines per image id. partial: ImagePartial per image id, or None when the split has no partial
            information (partial.json then holds only what other splits carried over, if anything).
        options: the converter's keys recorded in the output marker for this split.

    Returns:
        (tuple): all splits now in out, data.yaml's train/val/test roles, and the listed images missing from src.
    """
    from ultralytics.utils import TQDM

    missing = [name for name, _, _ in entries.values() if not (src / name).is_file()]
    if entries and len(missing) == len(entries):
        raise PartialDataError(f"images={src} holds none of the {len(entries)} images of {path} (first: {missing[0]})")
    kept_splits, others = earlier_output(out, split, names, path, command)
    carried = carried_partial(out, others, names)
    producer = {
        "command": command,
        "splits": {
            **kept_splits,
            split: {"annotations": str(path.absolute()), "images": str(src.absolute()), **options},
        },
    }
    with atomic_dir(out, producer) as tmp:
        for sub in ("images", "labels"):
            (tmp / sub / split).mkdir(parents=True)
            for other in others:
                if (out / sub / other).is_dir():
                    shutil.copytree(out / sub / other, tmp / sub / other, symlinks=True, copy_function=hardlink_or_copy)
        written = {}
        for image_id, (name, _, _) in TQDM(entries.items(), desc=f"{command.split()[-1].upper()} {split}"):
            if not (src / name).is_file():
                stats["boxes of missing images"] += len(labels.get(image_id, ()))
                continue
            lines, file = labels.get(image_id, []), Path(name).name
            link_image(src / name, tmp / "images" / split / file)
            text = "\n".join(lines) + "\n" if lines else ""
            (tmp / "labels" / split / f"{Path(name).stem}.txt").write_text(text, encoding="utf-8")
            stats.update(images=1, boxes=len(lines), empty=not lines)
            if partial is not None and image_id in partial:
                written[f"images/{split}/{file}"] = partial[image_id]
        splits = sorted([*others, split])
        roles = split_roles(splits)
        fields = dict(roles)
        if partial is not None or carried:  # this split's entries, or entries carried over from other splits
            write_partial(tmp / PARTIAL, {**(carried or {}), **written}, names)
            fields["partial"] = PARTIAL
        header = f"# {command.split()[-1].upper()} converted by yolo-partial\n"
        (tmp / "data.yaml").write_text(data_yaml_text(fields, names, header), encoding="utf-8")
    stats["missing images"] = len(missing)
    return splits, roles, missing


def warn_left_out(fmt: str, split: str, src: Path, missing: list[str], stats: Counter) -> None:
    """Warn of the listed images that were not found and the annotations naming an unknown category or image."""
    from ultralytics.utils import LOGGER

    if missing:
        LOGGER.warning(f"{fmt} {split}: {len(missing)} listed images not found in {src}, left out (first: {missing[0]})")
    for key in ("unknown category", "unknown image id"):
        if stats[key]:
            LOGGER.warning(f"{fmt} {split}: {stats[key]} annotations with an {key} left out")


def convert_coco(annotations: str | Path, images: str | Path, out: str | Path, crowd: str = "skip") -> dict:
    """Convert one COCO instances JSON and its image folder into split `<json name without instances_>` of `out`.

    Other splits already in `out` (from earlier calls) are kept; a split of the same name is replaced; data.yaml is
    rewritten to name the splits present. The whole output folder is swapped in at once, so a failure changes nothing.

    Returns:
        (dict): 'split', 'images', 'boxes', 'empty' (images without boxes), 'crowd skipped', 'crowd kept',
            'crowd ignored' (written to partial.json), 'zero-size', 'unknown category', 'unknown image id' (boxes left
            out), 'missing images' (listed but absent, left out, with their 'boxes of missing images'), 'repeated ids'
            (image entries ignored) and 'splits' (all splits now in out).
    """
    from ultralytics.utils import LOGGER

    if crowd not in CROWD:
        raise PartialDataError(f"crowd={crowd} is invalid: expected one of {'|'.join(CROWD)}")
    path, src, out = Path(annotations), Path(images), Path(out).expanduser().absolute()
    data = load_instances(path)
    if not src.is_dir():
        raise PartialDataError(f"images={src} is not a folder: expected the folder of the JSON's file_name images")
    split = path.stem.removeprefix("instances_")
    cls_of, names = read_categories(data, path)
    entries, repeats = read_images(data, path)
    stats = Counter({"repeated ids": repeats})
    regions: dict[int, list] = {}
    labels = image_labels(data, path, entries, cls_of, crowd, stats, regions)
    partial = {i: ImagePartial(ignore=boxes) for i, boxes in regions.items()} if crowd == "ignore" else None
    splits, roles, missing = write_split(
        "convert coco", path, src, out, split, names, entries, labels, partial, stats, {"crowd": crowd}
    )
    summary = {"split": split, **{k: stats[k] for k in COUNTS}, "splits": splits}
    warn_left_out("COCO", split, src, missing, stats)
    columns = ["images", "boxes", "empty", "crowd skipped", "crowd kept", "crowd ignored", "zero-size",
               "missing images", "repeated ids"]  # fmt: skip
    LOGGER.info(f"COCO {path.name} -> {out} (data.yaml: {roles})\n{format_table({split: stats}, columns)}")
    return summary
