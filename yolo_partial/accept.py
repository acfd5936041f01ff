"""`yolo-partial accept`: fold a review of `mine`'s candidates back into a new version of the dataset.

The reviewed file is candidates.xml after review in CVAT (exported as CVAT for images 1.1) or candidates.json after
review in any COCO tool. It is compared with the record that `mine` kept (mined=DIR, its output folder; its
candidates.json must be unchanged): per image, every reviewed box is matched back to an exported box whose corners
agree within TOL_PX (CVAT rounds to 0.01 px), then edited boxes are paired by IoU >= EDIT_IOU:

  candidate kept (any class)          accepted: added to the labels, with the class the reviewer left on it
  candidate moved or resized          accepted with the reviewed box ("edited")
  candidate deleted                   rejected
  new box                             added ("drawn")
  label deleted, moved or relabelled  applied only with remove_labels=True; else the label stays as it was
An image of the record that the reviewed file does not hold is unreviewed: its candidates are neither accepted nor
rejected.

Output folder (same layout as `split`, written atomically, deterministic; the source is only read):
  images/...     the split's images, linked not copied
  labels/...     the source's label lines verbatim (minus removed labels), then the added boxes
  data.yaml      the mined split relative to the folder, the other splits pointing at the source, other keys kept
  accepted.json  in the hidden.json manifest family: every box added, every candidate rejected, every label removed
  hidden.json    when the source names a manifest: carried over, less the hidden boxes the added boxes restore
  partial.json   when the source names a `partial:` file: carried over (a class that gained a box in an image is no
                 longer verified absent there; see split.carry_partial); and when mine wrote uncertain.json
                 (mine uncertain=S): its predictions as ignore boxes of their images, reviewed or not, unless
                 ignore_uncertain=False

Usage: ``yolo-partial accept data=X.yaml reviewed=FILE [mined=DIR] [out=DIR] [remove_labels=False]
[ignore_uncertain=True]``
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cvat import read_cvat_images
from .errors import PartialConfigError, PartialDataError
from .fileio import atomic_dir
from .hidden import find_manifest, load_manifest
from .labels import MANIFEST_FORMAT, data_yaml_text
from .data import resolve_data
from .mine import (RECORD, RECORD_FORMAT, UNCERTAIN, UNCERTAIN_FORMAT, SplitImages, _num, _text, box_iou, check_args,
                   dir_key, greedy_match, load_split, xyxy_to_yolo, yolo_to_xyxy)
from .partial_labels import ImagePartial, load_for_data, write_partial
from .split import carry_partial, linked_images, write_lists

TOL_PX = 0.5  # a reviewed box within this many pixels of an exported one is that box (CVAT keeps 0.01 px)
EDIT_IOU = 0.5  # a reviewed box that moved this little from an exported one is that box, edited
IMAGE_KEYS = ("train", "val", "test", "minival")  # data YAML keys holding image sources

ACCEPT_KEYS = {
    "data": (None, lambda v: v is None or _text(v), "a data YAML (default: the one mine read)"),
    "reviewed": (None, _text, "the reviewed candidates.xml (CVAT for images 1.1) or candidates.json (COCO)"),
    "mined": (None, lambda v: v is None or _text(v), "the output folder of `yolo-partial mine`"),
    "out": (None, lambda v: v is None or _text(v), "an output folder"),
    "remove_labels": (False, lambda v: isinstance(v, bool), "True or False"),
    "ignore_uncertain": (True, lambda v: isinstance(v, bool), "True or False"),
    "match_iou": (None, lambda v: v is None or (_num(v) and 0 < v <= 1), "a number in (0, 1]"),
}


# ---------------------------------------------------------------------------------------------- reading the inputs
@dataclass
class Record:
    """What `mine` exported: per image name, its size and candidates (k, 6) [cls, x1, y1, x2, y2, score] pixels,
    and with uncertain.json the predictions below the cut (u, 4) normalised [cx, cy, w, h]."""

    folder: Path
    meta: dict[str, Any]
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (width, height)
    cands: dict[str, np.ndarray] = field(default_factory=dict)
    uncertain: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Reviewed:
    """One image of the reviewed file: its size as the file states it and its boxes (r, 5) [cls, x1, y1, x2, y2]."""

    name: str
    width: int
    height: int
    boxes: np.ndarray


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PartialDataError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PartialDataError(f"{path}: malformed JSON ({e}): expected {what}") from None


def _recorded(folder: Path, meta: dict, file: str) -> Path:
    """folder/file, checked against the checksum mine.json keeps of it."""
    path = folder / file
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    if digest != meta.get("files", {}).get(file):
        raise PartialDataError(f"{path}: missing or changed since mine wrote it; it is the record the review is "
                               "compared with: expected it untouched (review a copy, or re-run mine)")
    return path


def load_record(folder: Path) -> Record:
    """Read mine's record (mine.json, the untouched candidates.json and uncertain.json) from its output folder."""
    meta = _load_json(folder / RECORD, f"{RECORD} of a `yolo-partial mine` output folder")
    if not isinstance(meta, dict) or meta.get("format") != RECORD_FORMAT:
        raise PartialDataError(f"{folder / RECORD}: not a mine record: expected format '{RECORD_FORMAT}'")
    coco = _load_json(_recorded(folder, meta, "candidates.json"), "COCO JSON")
    record = Record(folder, meta)
    ids = {}
    for im in coco["images"]:
        ids[im["id"]] = im["file_name"]
        record.sizes[im["file_name"]] = (int(im["width"]), int(im["height"]))
        record.cands[im["file_name"]] = []
    for a in coco["annotations"]:
        if a.get("candidate"):
            x, y, w, h = a["bbox"]
            record.cands[ids[a["image_id"]]].append([a["category_id"] - 1, x, y, x + w, y + h, a["score"]])
    record.cands = {k: np.array(v, np.float64).reshape(-1, 6) for k, v in record.cands.items()}
    if UNCERTAIN in meta.get("files", {}):
        path = _recorded(folder, meta, UNCERTAIN)
        band = _load_json(path, f"{UNCERTAIN} of a `yolo-partial mine` output folder")
        if not isinstance(band, dict) or band.get("format") != UNCERTAIN_FORMAT:
            raise PartialDataError(f"{path}: expected format '{UNCERTAIN_FORMAT}'")
        record.uncertain = {k: np.array(v, np.float32).reshape(-1, 6)[:, 1:5] for k, v in band["images"].items()}
    return record


def _class_ids(path: Path, names: dict[int, str]):
    """A function label name -> class id that raises a one-line error naming the file for an unknown name."""
    ids = {n: c for c, n in names.items()}

    def cls_of(label: str) -> int:
        if label not in ids:
            raise PartialDataError(f"{path}: unknown label name {label!r}: expected one of the data YAML's names "
                                   f"({', '.join(names.values())})")
        return ids[label]

    return cls_of


def read_cvat_review(path: Path, names: dict[int, str]) -> list[Reviewed]:
    """A reviewed CVAT for images 1.1 file -> one Reviewed per <image>."""
    cls_of = _class_ids(path, names)
    return [Reviewed(im.name, im.width, im.height,
                     np.array([[cls_of(b.label), *b.xyxy] for b in im.boxes], np.float64).reshape(-1, 5))
            for im in read_cvat_images(path).images]


def read_coco_review(path: Path, names: dict[int, str]) -> list[Reviewed]:
    """A reviewed COCO detection JSON -> one Reviewed per image entry; malformed entries are one-line errors."""
    coco = _load_json(path, "COCO JSON")
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations",
                                                                                   "categories")):
        raise PartialDataError(f"{path}: expected a COCO object with 'images', 'annotations' and 'categories' lists")
    cls_of = _class_ids(path, names)
    try:
        cats = {c["id"]: cls_of(c["name"]) for c in coco["categories"]}
        images = {im["id"]: Reviewed(im["file_name"], int(im["width"]), int(im["height"]), []) for im in coco["images"]}
        for a in coco["annotations"]:
            x, y, w, h = (float(v) for v in a["bbox"])
            if not all(np.isfinite([x, y, w, h])) or w < 0 or h < 0:
                raise ValueError(f"annotation {a.get('id')} has bbox {a['bbox']}")
            images[a["image_id"]].boxes.append([cats[a["category_id"]], x, y, x + w, y + h])
    except (KeyError, TypeError, ValueError) as e:
        raise PartialDataError(f"{path}: malformed COCO entry ({type(e).__name__}: {e}): expected images with id, "
                               "file_name, width, height and annotations with image_id, category_id, bbox") from None
    names_seen = [im.name for im in images.values()]
    if len(set(names_seen)) != len(names_seen):
        raise PartialDataError(f"{path}: an image file_name appears twice: expected one entry per image")
    return [Reviewed(r.name, r.width, r.height, np.array(r.boxes, np.float64).reshape(-1, 5)) for r in images.values()]


def read_review(path: Path, names: dict[int, str]) -> list[Reviewed]:
    """The reviewed file, CVAT for images 1.1 (.xml) or COCO (.json) -> list of Reviewed."""
    if not path.is_file():
        raise PartialDataError(f"reviewed file not found: {path}")
    if path.suffix.lower() == ".xml":
        return read_cvat_review(path, names)
    if path.suffix.lower() == ".json":
        return read_coco_review(path, names)
    raise PartialDataError(f"{path}: unknown review format: expected a .xml (CVAT for images 1.1) or .json (COCO)")


def match_names(path: Path, reviewed: list[Reviewed], data: SplitImages) -> dict[str, str]:
    """{reviewed image name: the split's image name}: exact, else by unique file name (CVAT may drop folders)."""
    known = set(data.name_of.values())
    by_base: dict[str, list[str]] = {}
    for n in known:
        by_base.setdefault(n.rsplit("/", 1)[-1], []).append(n)
    found, missing = {}, []
    for r in reviewed:
        hits = [r.name] if r.name in known else by_base.get(r.name.replace("\\", "/").rsplit("/", 1)[-1], [])
        if len(hits) == 1:
            found[r.name] = hits[0]
        else:
            missing.append(r.name)
    if missing:
        raise PartialDataError(f"{path}: {len(missing)} of {len(reviewed)} image names are not images of the "
                               f"{data.split} split of {data.yaml_path}, first {missing[0]!r}: expected the image "
                               "names of candidates.xml (a review of this dataset)")
    if len(set(found.values())) != len(found):
        twice = next(n for n in found.values() if list(found.values()).count(n) > 1)
        raise PartialDataError(f"{path}: two reviewed images are both {twice!r}: expected one entry per image")
    return found


# ------------------------------------------------------------------------------------------------------- decisions
@dataclass
class Outcome:
    """What the review decided for one image. Boxes are pixels.

    added: (cls, xyxy, score or None, origin) with origin candidate | relabelled | edited | drawn | label_edit;
    rejected: (cls, xyxy, score); removed: indices of label rows removed (remove_labels=True only);
    kept: labels the review deleted, moved or relabelled that stay because remove_labels is False.
    """

    added: list[tuple] = field(default_factory=list)
    rejected: list[tuple] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    kept: int = 0


def pair(cost: np.ndarray, ok: np.ndarray) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (i, j) among the allowed entries of `ok`, lowest `cost` first (ties: lowest i, j)."""
    pairs, used_i, used_j = [], set(), set()
    cand = np.argwhere(ok)
    for i, j in cand[np.argsort(cost[ok], kind="stable")].tolist():
        if i not in used_i and j not in used_j:
            pairs.append((i, j))
            used_i.add(i)
            used_j.add(j)
    return pairs


def decide(reviewed: np.ndarray, labels: np.ndarray, cands: np.ndarray, remove_labels: bool) -> Outcome:
    """Match one image's reviewed boxes back to its labels and exported candidates and decide each box's fate.

    Args:
        reviewed (np.ndarray): (r, 5) [cls, x1, y1, x2, y2] boxes left by the reviewer.
        labels (np.ndarray): (n, 5) the source's labels of the image, same form.
        cands (np.ndarray): (k, 6) the exported candidates [cls, x1, y1, x2, y2, score].
    """
    out = Outcome()
    exported = np.concatenate([labels, cands[:, :5]])  # label j < n, candidate n + j
    n = len(labels)
    diff = np.abs(reviewed[:, None, 1:5] - exported[None, :, 1:5]).max(2) if len(reviewed) and len(exported) else \
        np.zeros((len(reviewed), len(exported)))
    other_cls = reviewed[:, :1] != exported[:, 0]
    exact = pair(diff + other_cls, diff <= TOL_PX)  # same corners; a kept class is preferred over a changed one
    free_r = set(range(len(reviewed))) - {i for i, _ in exact}
    free_e = set(range(len(exported))) - {j for _, j in exact}
    edited = []
    for part in (range(n, len(exported)), range(n)):  # moved candidates first, then moved labels
        rs, es = sorted(free_r), sorted(free_e & set(part))
        overlap = box_iou(reviewed[rs, 1:5], exported[es, 1:5]) if rs and es else np.zeros((len(rs), len(es)))
        for i, j in pair(-overlap, overlap >= EDIT_IOU):
            edited.append((rs[i], es[j]))
            free_r.discard(rs[i])
            free_e.discard(es[j])
    for i, j in exact + edited:
        box, cls = reviewed[i, 1:5], int(reviewed[i, 0])
        if j >= n:  # a candidate kept: accepted as the reviewer left it
            c = cands[j - n]
            origin = "edited" if (i, j) in edited else "relabelled" if cls != int(c[0]) else "candidate"
            out.added.append((cls, c[1:5] if origin != "edited" else box, float(c[5]), origin))
        elif (i, j) in edited or cls != int(labels[j, 0]):  # a label moved or relabelled
            if remove_labels:
                out.removed.append(j)
                out.added.append((cls, box, None, "label_edit"))
            else:
                out.kept += 1
    for i in sorted(free_r):
        out.added.append((int(reviewed[i, 0]), reviewed[i, 1:5], None, "drawn"))
    for j in sorted(free_e):
        if j >= n:
            c = cands[j - n]
            out.rejected.append((int(c[0]), c[1:5], float(c[5])))
        elif remove_labels:
            out.removed.append(j)
        else:
            out.kept += 1
    out.removed.sort()
    return out


def restore_hidden(added: list[tuple], hidden: np.ndarray, match_iou: float) -> tuple[np.ndarray, set[int]]:
    """Match added boxes to the image's hidden boxes as `mine` scores them (score order, greedy, same class).

    Args:
        added (list): Outcome.added of the image, boxes in pixels.
        hidden (np.ndarray): (h, 5) [cls, x1, y1, x2, y2] pixels.

    Returns:
        (np.ndarray, set): per added box whether it restores a hidden box (bool (a,)), and the restored hidden indices.
    """
    if not added or not len(hidden):
        return np.zeros(len(added), bool), set()
    order = sorted(range(len(added)), key=lambda i: -(added[i][2] if added[i][2] is not None else 1.0))
    boxes = np.array([[added[i][0], *added[i][1]] for i in order], np.float64)
    took = greedy_match(boxes, hidden, match_iou)
    restores = np.zeros(len(added), bool)
    restores[np.array(order)[took >= 0]] = True
    return restores, {int(t) for t in took if t >= 0}


# --------------------------------------------------------------------------------------------------------- writing
def _yolo(cls: int, xyxy, width: int, height: int) -> tuple[str, list[float]]:
    """A pixel box -> (YOLO label line, [cx, cy, w, h] as written)."""
    box = [round(float(v), 6) for v in xyxy_to_yolo(np.asarray(xyxy), width, height)[0]]
    return f"{cls} {box[0]:.6f} {box[1]:.6f} {box[2]:.6f} {box[3]:.6f}", box


def image_size(file: str) -> tuple[int, int]:
    """(width, height) of an image as Ultralytics sees it (EXIF orientation applied), from its header."""
    from PIL import Image
    from ultralytics.data.utils import exif_size

    try:
        with Image.open(file) as im:
            return exif_size(im)
    except OSError as e:
        raise PartialDataError(f"{file}: unreadable image ({e})") from None


@dataclass
class Carried:
    """The source's hidden-box manifest, to carry over: its file, JSON, image root and entries by image."""

    path: Path
    raw: dict[str, Any]  # the manifest as read; raw["removed"] holds the entries
    root: Path  # folder its image paths are relative to
    by_image: dict[str, list[int]]  # dir_key(image) -> indices into raw["removed"], in file order

    def boxes(self, file: str) -> tuple[list[int], np.ndarray]:
        """(entry indices, (h, 5) [cls, cx, cy, w, h]) of one image's hidden boxes."""
        idx = self.by_image.get(dir_key(file), [])
        entries = self.raw["removed"]
        return idx, np.array([[entries[i]["cls"], *entries[i]["box"]] for i in idx], np.float64).reshape(-1, 5)


def carried_manifest(data: SplitImages) -> Carried | None:
    """The source's hidden-box manifest (checked entry by entry), or None when its data YAML names none."""
    path = find_manifest(data.yaml_path)
    if path is None:
        return None
    manifest = load_manifest(path)  # one-line errors for a malformed manifest
    raw = json.loads(path.read_text(encoding="utf-8"))
    by_image: dict[str, list[int]] = {}
    for i, e in enumerate(raw["removed"]):
        by_image.setdefault(dir_key(manifest.root / e["image"]), []).append(i)
    return Carried(path, raw, manifest.root, by_image)


def new_manifest(carried: Carried, restored: set[int], rel_of: dict[str, str], names: dict[int, str]) -> dict:
    """hidden.json of the new version: the source's, less the restored boxes, images relative to the new folder."""
    kept, per_class = [], {}
    for i, e in enumerate(carried.raw["removed"]):
        if i in restored:
            per_class[e["cls"]] = per_class.get(e["cls"], 0) + 1
            continue
        key = dir_key(carried.root / e["image"])
        kept.append({**e, "image": rel_of.get(key, key)})  # images outside the split keep an absolute path
    out = {k: v for k, v in carried.raw.items() if k != "removed"}
    out.update(root=".", carried_over={"from": str(carried.path), "restored": len(restored)})
    summary = out.get("summary")
    if isinstance(summary, dict) and isinstance(summary.get("per_class"), dict):
        summary = out["summary"] = json.loads(json.dumps(summary))  # a copy
        for c, k in per_class.items():
            row = summary["per_class"].get(names.get(c, ""))
            if isinstance(row, dict):
                row["removed"] = row.get("removed", k) - k
                row["after"] = row.get("after", 0) + k
        summary["removed"] = len(kept)
        if "boxes_after" in summary:
            summary["boxes_after"] += len(restored)
    out["removed"] = kept
    return out


def add_ignore(entries: dict[str, ImagePartial], uncertain: dict[str, np.ndarray], data: SplitImages) -> int:
    """Add each image's uncertain predictions (normalised xywh, by record name) to its `partial:` entry (by path in the
    output) as ignore boxes -> how many were added."""
    rel_of_name = {data.name_of[f]: rel for rel, f in data.images.images.items()}
    for name, boxes in uncertain.items():
        rel = rel_of_name[name]
        e = entries.get(rel) or ImagePartial()
        entries[rel] = ImagePartial(e.labeled, e.negative, np.concatenate([e.ignore, boxes]))
    return sum(len(b) for b in uncertain.values())


def new_data_yaml(out: Path, data: SplitImages, entry: str | list[str], hidden: bool, header: str,
                  partial: bool = False) -> str:
    """data.yaml of the new version: the mined split in it, the other image sources at the source, other keys kept."""
    absolute = lambda s: str((data.root / str(s)).resolve())  # noqa: E731
    fields: dict[str, Any] = {"path": str(out), data.split: entry}
    for k in IMAGE_KEYS:
        if k != data.split and (v := data.cfg.get(k)):
            fields[k] = [absolute(s) for s in v] if isinstance(v, list) else absolute(v)
    if hidden:
        fields["hidden"] = "hidden.json"
    if partial:
        fields["partial"] = "partial.json"
    skip = {*IMAGE_KEYS, "path", "hidden", "partial", "names", "nc"}
    fields.update((k, v) for k, v in data.cfg.items() if k not in skip)
    return data_yaml_text(fields, data.names, header)


# ---------------------------------------------------------------------------------------------------------- the run
def default_out(data: SplitImages) -> Path:
    """<datasets_dir>/<source root folder name>-accepted, as split names its outputs."""
    from ultralytics.utils import DATASETS_DIR

    return DATASETS_DIR / f"{data.root.name}-accepted"


def check_out(out: Path, data: SplitImages, reviewed: Path, mined: Path) -> None:
    """The output folder must not hold the source, the review or the record: it is replaced as a whole."""
    real = Path(os.path.realpath(out))
    if real == data.root or real.is_relative_to(data.root):
        raise PartialConfigError(f"out={out} is inside the source dataset {data.root}: expected a folder outside it")
    for what, p in (("reviewed", reviewed), ("mined", mined)):
        if Path(os.path.realpath(p)).is_relative_to(real):
            raise PartialConfigError(f"out={out} holds {what}={p}, which writing out would replace: expected another "
                                     "folder")


def run_accept(args: dict[str, Any]) -> Path:
    """CLI entry: `args` are accept's keys (typed by smart_value), see ACCEPT_KEYS -> the new data YAML's path."""
    from ultralytics.utils import LOGGER

    opts = check_args(args, ACCEPT_KEYS)
    if opts["reviewed"] is None:
        raise PartialConfigError("accept needs reviewed=FILE: expected the reviewed candidates.xml or candidates.json")
    reviewed_path = Path(str(opts["reviewed"])).expanduser().absolute()
    if not reviewed_path.is_file():
        raise PartialDataError(f"reviewed file not found: {reviewed_path}")
    mined = Path(str(opts["mined"] or reviewed_path.parent)).expanduser().absolute()
    if not (mined / RECORD).is_file():
        raise PartialConfigError(f"mined={mined} holds no {RECORD}: expected the output folder of the mine run the "
                                 "review came from (pass mined=DIR)")
    record = load_record(mined)
    data = load_split(resolve_data(str(opts["data"] or record.meta["data"])), record.meta["split"])
    if list(data.names.values()) != record.meta["names"]:
        raise PartialDataError(f"{data.yaml_path}: names {list(data.names.values())} differ from those mined "
                               f"({record.meta['names']}): expected the dataset the candidates were mined on")
    match_iou = opts["match_iou"] or record.meta["match_iou"]
    reviewed = read_review(reviewed_path, data.names)
    name_of_review = match_names(reviewed_path, reviewed, data)
    out = Path(str(opts["out"])).expanduser().absolute() if opts["out"] else default_out(data)
    check_out(out, data, reviewed_path, mined)
    review = {name_of_review[r.name]: r for r in reviewed}
    unknown = sorted(({*record.sizes, *record.uncertain}) - set(data.name_of.values()))
    if unknown:
        raise PartialDataError(f"{mined / 'candidates.json'}: {len(unknown)} mined images are not in the "
                               f"{data.split} split of {data.yaml_path}, first {unknown[0]!r}: expected the data "
                               "the candidates were mined on")
    carried = carried_manifest(data)
    producer = {"command": "accept", "data": str(data.yaml_path), "reviewed": str(reviewed_path), "mined": str(mined),
                "remove_labels": opts["remove_labels"], "match_iou": match_iou,
                "ignore_uncertain": opts["ignore_uncertain"]}
    if not opts["ignore_uncertain"]:
        record.uncertain = {}
    with atomic_dir(out, producer) as tmp:
        summary = write_version(tmp, out, data, record, review, carried, opts["remove_labels"], match_iou,
                                reviewed_path)
    LOGGER.info(f"accept: {summary['reviewed_images']} images reviewed ({summary['unreviewed_images']} mined images "
                f"not in the review): {summary['accepted']} candidates accepted, {summary['rejected']} rejected, "
                f"{summary['drawn']} boxes drawn, {summary['labels_removed']} labels removed"
                + (f", {summary['labels_kept']} labels deleted or edited in review kept (remove_labels=True applies "
                   "them)" if summary["labels_kept"] else "")
                + (f"; {summary['hidden_restored']} hidden boxes restored" if carried else "")
                + (f"; {summary['ignore_boxes']} uncertain predictions made ignore regions"
                   if record.uncertain else ""))
    LOGGER.info(f"accept: new dataset version written to {out} (data YAML {out / 'data.yaml'})")
    return out / "data.yaml"


def write_version(tmp: Path, out: Path, data: SplitImages, record: Record, review: dict[str, Reviewed],
                  carried: Carried | None, remove_labels: bool, match_iou: float, reviewed_path: Path
                  ) -> dict[str, int]:
    """Write the new dataset version into tmp (final location out) -> the summary counts of accepted.json."""
    nc = len(data.names)
    added, rejected, removed, restored = [], [], [], set()
    counts = dict.fromkeys(("candidate", "relabelled", "edited", "drawn", "label_edit"), 0)
    kept_labels, zero_area = 0, 0
    rel_of = {dir_key(f): rel for rel, f in data.images.images.items()}
    for rel, file, label_dst, rows in linked_images(tmp, out, data.images.images, nc):
        label_dst = Path(label_dst)
        name = data.name_of[file]
        r = review.get(name)
        if r is None:  # not reviewed: the labels stay as they are
            if rows is not None:
                label_dst.write_text("".join(f"{line}\n" for line, _, _ in rows), encoding="utf-8")
            continue
        width, height = record.sizes.get(name) or image_size(file)
        if (r.width, r.height) != (width, height):
            raise PartialDataError(f"{reviewed_path}: image {r.name!r} is {r.width}x{r.height} there but "
                                   f"{width}x{height} in the dataset: expected a review of this dataset's images")
        labels = yolo_to_xyxy(np.array([[c, *b] for _, c, b in rows or []]).reshape(-1, 5), width, height)
        outcome = decide(r.boxes, labels, record.cands.get(name, np.zeros((0, 6))), remove_labels)
        kept_labels += outcome.kept
        restores = np.zeros(len(outcome.added), bool)
        if carried is not None:
            idx, hidden = carried.boxes(file)
            restores, took = restore_hidden(outcome.added, yolo_to_xyxy(hidden, width, height), match_iou)
            restored |= {idx[t] for t in took}
        lines = [line for j, (line, _, _) in enumerate(rows or []) if j not in set(outcome.removed)]
        for (cls, box, score, origin), hit in zip(outcome.added, restores):
            line, yolo_box = _yolo(cls, box, width, height)
            if yolo_box[2] <= 0 or yolo_box[3] <= 0:
                zero_area += 1  # a box with no area (drawn by a slip): Ultralytics would drop it anyway
                continue
            lines.append(line)
            counts[origin] += 1
            added.append({"image": rel, "cls": cls, "box": yolo_box, "origin": origin,
                          **({"score": round(score, 5)} if score is not None else {}), "hidden": bool(hit)})
        rejected += [{"image": rel, "cls": c, "box": _yolo(c, b, width, height)[1], "score": round(s, 5)}
                     for c, b, s in outcome.rejected]
        removed += [{"image": rel, "cls": rows[j][1], "box": rows[j][2]} for j in outcome.removed]
        if rows is not None or lines:
            label_dst.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    write_lists(tmp, data.images.lists)
    summary = {"reviewed_images": len(review), "unreviewed_images": len(set(record.sizes) - set(review)),
               "accepted": counts["candidate"] + counts["relabelled"] + counts["edited"], **counts,
               "rejected": len(rejected), "labels_removed": len(removed), "labels_kept": kept_labels,
               "zero_area_skipped": zero_area, "hidden_restored": len(restored)}
    partial = load_for_data(data.yaml_path)  # the source's partial: file, carried over with its claims kept true
    entries = {}
    if partial is not None:
        gained = {}
        for box in added:
            gained.setdefault(box["image"], set()).add(box["cls"])
        entries = carry_partial(partial, data.images, {}, gained)
    if record.uncertain:
        summary["ignore_boxes"] = add_ignore(entries, record.uncertain, data)
    if partial is not None or record.uncertain:
        write_partial(tmp / "partial.json", entries, list(data.names.values()))
    header = {"format": MANIFEST_FORMAT, "kind": "accepted", "source": str(data.yaml_path), "split": data.split,
              "reviewed": str(reviewed_path), "mined": str(record.folder), "remove_labels": remove_labels,
              "match_iou": match_iou, "root": ".", "summary": summary}
    accepted = {**header, "added": added, "rejected": rejected, "removed": removed}
    (tmp / "accepted.json").write_text(json.dumps(accepted, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if carried is not None:
        manifest = new_manifest(carried, restored, rel_of, data.names)
        (tmp / "hidden.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    comment = (f"# yolo-partial accept of {json.dumps(reviewed_path.name)} into {json.dumps(str(data.yaml_path))}: "
               f"{len(added)} boxes added, {len(rejected)} candidates rejected, {len(removed)} labels removed\n"
               "# accepted.json lists every box added, rejected and removed.\n")
    (tmp / "data.yaml").write_text(new_data_yaml(out, data, data.images.entry, carried is not None, comment,
                                                 partial is not None or bool(record.uncertain)), encoding="utf-8")
    return summary
