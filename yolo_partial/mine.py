"""`yolo-partial mine`: propose the boxes a partially labelled split is missing, ranked, calibrated, ready for review.

A model trained with partial-label methods is not taught that unlabelled objects are background, so on its own
training images it fires on objects nobody boxed. For every image of the split, the model's predictions (Ultralytics'
predictor, class-wise NMS at `iou`, batched) that overlap no label of the same class at IoU >= `match_iou` are
*candidates*. Predictions are kept down to SCORE_FLOOR so that the precision-recall curve is complete; the exported
list is cut at `conf`: by default the lowest score whose precision against a hidden-box manifest reaches `precision`
(when the data YAML names one), else DEFAULT_CONF. Labels no prediction of their class reproduces at the cut are
listed as possibly wrong.

Output folder (default runs/mine/<name>, incremented as Ultralytics does; written atomically):
  candidates.xml      CVAT for images 1.1: one <image> per image with candidates, labels and candidates as boxes with
                      attributes source=label|candidate and score, declared in <meta> so CVAT keeps them
  cvat_labels.json    the same label declarations for CVAT's Raw label editor, to create the review task with
  candidates.json     COCO: images, categories, annotations (labels, and candidates with score and "candidate": true)
  candidates/         YOLO label files holding only candidates, 'cls cx cy w h score'
  ranking.csv         every image, ranked by expected missing boxes (sum of its candidates' scores)
  suspect_labels.csv  labels the model does not reproduce
  review.html         the top images drawn with labels and candidates in two colours, one offline file
  review.png          contact sheet of the top 16
  pr.csv, pr.png      with a manifest: precision and recall of the candidate list at every score threshold
  mine.json           the run's figures, and the checksum of candidates.json, the record `accept` compares with
  uncertain.json      with uncertain=S: the predictions below the cut down to score S, which match no label; `accept`
                      makes them ignore regions of the new version (neither object nor background), so that a second
                      round is not taught that the objects the list was too unsure to propose are background
  images.zip          with images=True: the listed images, named as in candidates.xml, for the CVAT task

Usage: ``yolo-partial mine model=best.pt data=X.yaml [split=train] [conf=...] [match_iou=0.5] [out=DIR]``
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import html
import json
import math
import os
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from .cvat import CvatAttribute, CvatBox, CvatImage, CvatLabel, write_cvat_images
from .data import dataset_root, load_yaml, resolve_data
from .errors import PartialConfigError, PartialDataError
from .fileio import atomic_dir, check_replaceable
from .hidden import find_manifest, load_manifest
from .keys import check_known_keys
from .labels import class_names, read_label_file
from .split import TrainSet, train_set

SPLITS = ("train", "val", "test")
SCORE_FLOOR = 0.001  # predictions are kept down to here, so the PR curve reaches the lowest scores
DEFAULT_CONF = 0.25  # Ultralytics' predict default: the cut when no manifest calibrates one
RECORD, RECORD_FORMAT = "mine.json", "yolo-partial-mine/1"
UNCERTAIN, UNCERTAIN_FORMAT = "uncertain.json", "yolo-partial-uncertain/1"
LABEL_BGR, CANDIDATE_BGR = (40, 200, 40), (0, 140, 255)  # green labels, orange candidates
SHEET_TILES, SHEET_TILE_PX = 16, 256
REVIEW_MAX_DRAWN = 30  # candidates drawn per review image (the highest scores): more only hide the image
_EMPTY5 = np.zeros((0, 5))


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(v: Any) -> bool:
    return isinstance(v, (str, Path)) and str(v) != ""


_UNIT = "a number in (0, 1]"
# key: (default, check, what is expected); every key of `mine` is here, so this is also its list of known keys
MINE_KEYS: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "model": (None, _text, "a detection checkpoint such as runs/detect/train/weights/best.pt"),
    "data": (None, lambda v: v is None or _text(v), "a data YAML (default: the checkpoint's)"),
    "split": ("train", lambda v: v in SPLITS, "one of " + "|".join(SPLITS)),
    "conf": (None, lambda v: v is None or (_num(v) and 0 < v < 1),
             "a score in (0, 1), or no conf for the calibrated threshold"),
    "iou": (0.7, lambda v: _num(v) and 0 < v <= 1, _UNIT + " (the NMS IoU)"),
    "match_iou": (0.5, lambda v: _num(v) and 0 < v <= 1, _UNIT),
    "precision": (0.8, lambda v: _num(v) and 0 < v <= 1, _UNIT),
    "imgsz": (None, lambda v: v is None or (_int(v) and v >= 32)
              or (isinstance(v, (list, tuple)) and len(v) == 2 and all(_int(x) and x >= 32 for x in v)),
              "an integer >= 32 or [h, w]"),
    "batch": (16, lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "max_det": (300, lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "device": (None, lambda v: not isinstance(v, bool), "a device such as cpu, 0 or 0,1"),
    "augment": (False, lambda v: isinstance(v, bool), "True or False"),
    "uncertain": (None, lambda v: v is None or (_num(v) and 0 < v < 1),
                  "a score in (0, 1) (the lowest score written to uncertain.json), or no uncertain"),
    "top": (50, lambda v: _int(v) and v >= 0, "an integer >= 0 (images in review.html)"),
    "images": (False, lambda v: isinstance(v, bool), "True or False"),
    "out": (None, lambda v: v is None or _text(v), "an output folder"),
    "project": (None, lambda v: v is None or _text(v), "a folder for runs"),
    "name": ("mine", _text, "a run name"),
    "exist_ok": (False, lambda v: isinstance(v, bool), "True or False"),
}


def check_args(args: dict[str, Any], spec: dict[str, tuple[Any, Callable[[Any], bool], str]]) -> dict[str, Any]:
    """Every key of `spec` with its default filled in and its value checked -> dict; one-line PartialConfigError."""
    check_known_keys(args, set(spec))
    out = {}
    for key, (default, ok, expected) in spec.items():
        value = args.get(key, default)
        if value is None and default is None:  # not given, no default: the caller decides (or refuses)
            out[key] = None
            continue
        if not ok(value):
            raise PartialConfigError(f"{key}={value!r} is invalid: expected {expected}")
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ data and images
@dataclass
class SplitImages:
    """The images of one split of a data YAML, with what `mine` and `accept` need to name and place them."""

    yaml_path: Path  # absolute data YAML
    cfg: dict[str, Any]  # its contents
    names: dict[int, str]  # class names
    root: Path  # resolved dataset root
    split: str  # train | val | test
    images: TrainSet  # rel path -> absolute image path, in split's output layout
    name_of: dict[str, str]  # absolute image path -> name in candidates.xml/json (relative to the images' folder)


def load_split(data: str | Path, split: str) -> SplitImages:
    """Read data YAML `data` and list the images of `split` -> SplitImages; one-line errors naming the YAML."""
    yaml_path = Path(data).expanduser().absolute()
    cfg = load_yaml(yaml_path, "data YAML")
    names = class_names(yaml_path, cfg)
    if not cfg.get(split):
        raise PartialDataError(f"{yaml_path}: no '{split}' images: expected a '{split}:' folder or list file")
    root = dataset_root(yaml_path, cfg).resolve()
    # split's TrainSet lists a source like Ultralytics' get_img_files: reuse it for any split, same output layout
    images = train_set(yaml_path, {**cfg, "train": cfg[split]}, root)
    return SplitImages(yaml_path, cfg, names, root, split, images, image_names(images.images.values()))


def image_names(files: Iterable[str]) -> dict[str, str]:
    """{absolute image path: POSIX path relative to the folder holding all of them}: CVAT's names for an upload.

    A task made from a folder (or from images.zip) names each frame by its path inside it, so for the usual flat
    `images/train` the names are the file names.
    """
    files = list(files)
    if not files:
        return {}
    common = os.path.commonpath([os.path.dirname(f) for f in files])
    return {f: os.path.relpath(f, common).replace(os.sep, "/") for f in files}


def dir_key(path: str | Path) -> str:
    """An image path with its folder resolved and its file name kept: split outputs hold symlinks to their sources,
    and a manifest and a data YAML may reach the same folder through different links."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(_real_dir(folder), name)


@functools.lru_cache(maxsize=4096)
def _real_dir(folder: str) -> str:
    return os.path.realpath(folder)  # a few folders hold all images: resolve each once


def hidden_boxes(data: SplitImages) -> tuple[Path | None, dict[str, np.ndarray]]:
    """The data YAML's hidden-box manifest and {dir_key(image): (n, 5) [cls, cx, cy, w, h]} for this split's images.

    A manifest with no hidden box in the split's images (e.g. mining `val` against a train manifest) cannot calibrate
    anything: (None, {}) then, with a warning.
    """
    from ultralytics.utils import LOGGER

    path = find_manifest(data.yaml_path)
    if path is None:
        return None, {}
    manifest = load_manifest(path)
    keys = {dir_key(f) for f in data.images.images.values()}
    boxes = {k: b for k, b in ((dir_key(f), b) for f, b in manifest.boxes.items()) if k in keys and len(b)}
    if not boxes:
        LOGGER.warning(f"mine: {path} lists no hidden box in the {data.split} images of {data.yaml_path}: "
                       "the candidate list cannot be calibrated")
        return None, {}
    return path, boxes


# --------------------------------------------------------------------------------------------------- the model
def load_detector(model: str | Path):
    """Load a checkpoint with Ultralytics -> YOLO; a missing file, an unloadable one or a non-detector is one line."""
    from ultralytics import YOLO

    path = Path(str(model))
    if not path.is_file():
        raise PartialDataError(f"model not found: {path}: expected a detection checkpoint such as "
                               "runs/detect/train/weights/best.pt")
    try:
        yolo = YOLO(str(path))
    except Exception as e:  # torch.load and Ultralytics raise many types for a file that is no checkpoint
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise PartialDataError(f"{path}: not a loadable YOLO checkpoint ({why}): expected a detection .pt") from None
    if yolo.task != "detect":
        raise PartialDataError(f"{path}: a {yolo.task} model, not a detector: expected a detection checkpoint")
    return yolo


def check_model_names(model_path: str, model_names: dict[int, str], data: SplitImages) -> None:
    """A model must predict the data's classes: a different class count is an error (ids would mean other things)."""
    if len(model_names) != len(data.names):
        raise PartialDataError(f"{model_path}: predicts {len(model_names)} classes but {data.yaml_path} names "
                               f"{len(data.names)}: expected the model trained on this dataset's classes")


# ------------------------------------------------------------------------------------------------ per-image mining
@dataclass
class MinedImage:
    """What mining found in one image. Boxes are pixels; candidates and labels are float64.

    Attributes:
        file (str): Absolute image path.
        name (str): Its name in candidates.xml/json.
        width (int), height (int): Image size in pixels.
        labels (np.ndarray): (n, 5) [cls, x1, y1, x2, y2] of the label file's boxes, in file order.
        cands (np.ndarray): (k, 6) [cls, x1, y1, x2, y2, score], score descending, corners rounded to 0.01 px.
        label_score (np.ndarray): (n,) best score of a same-class prediction with IoU >= match_iou (0 where none).
        other (np.ndarray): (n, 2) [cls, score] of the best other-class prediction with IoU >= match_iou ([-1, 0]).
        hit (np.ndarray | None): (k,) bool, candidate matched to a hidden box (with a manifest), else None.
        hidden (int): Number of hidden boxes in the image.
    """

    file: str
    name: str
    width: int
    height: int
    labels: np.ndarray
    cands: np.ndarray
    label_score: np.ndarray
    other: np.ndarray
    hit: np.ndarray | None
    hidden: int


def yolo_to_xyxy(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n, 5) [cls, cx, cy, w, h] normalised -> (n, 5) [cls, x1, y1, x2, y2] pixels, float64."""
    b = np.asarray(boxes, np.float64).reshape(-1, 5)
    cx, cy, w, h = b[:, 1] * width, b[:, 2] * height, b[:, 3] * width, b[:, 4] * height
    return np.stack([b[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def xyxy_to_yolo(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n, 4) pixel corners -> (n, 4) [cx, cy, w, h] normalised, clipped to the image."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    x1, x2 = np.clip(b[:, [0, 2]], 0, width).T
    y1, y2 = np.clip(b[:, [1, 3]], 0, height).T
    return np.stack([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height], 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (n, 4) and (m, 4) pixel corner boxes -> (n, m); Ultralytics' numpy IoU with an eps below a pixel's."""
    from ultralytics.utils.metrics import bbox_ioa

    return bbox_ioa(np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4), iou=True,
                    eps=1e-12)


def greedy_match(boxes: np.ndarray, truth: np.ndarray, iou: float) -> np.ndarray:
    """COCO-style matching: in the order given (score descending), each box takes the unmatched same-class truth box
    of highest IoU >= iou.

    Args:
        boxes (np.ndarray): (k, 5+) [cls, x1, y1, x2, y2, ...] sorted by score, descending.
        truth (np.ndarray): (h, 5) [cls, x1, y1, x2, y2].

    Returns:
        (np.ndarray): (k,) int, the index of the truth box each box took, -1 where none.
    """
    took = np.full(len(boxes), -1)
    if not len(boxes) or not len(truth):
        return took
    overlap = np.where(boxes[:, :1] == truth[:, 0], box_iou(boxes[:, 1:5], truth[:, 1:5]), -1.0)  # (k, h)
    free = np.ones(len(truth), bool)
    for i in np.flatnonzero((overlap >= iou).any(1)):  # few boxes overlap anything: loop over those only
        row = np.where(free, overlap[i], -1.0)
        j = int(row.argmax())
        if row[j] >= iou:
            took[i], free[j] = j, False
    return took


def mine_image(file: str, name: str, result, labels: np.ndarray, hidden: np.ndarray | None,
               match_iou: float, asserted: np.ndarray | None = None) -> MinedImage:
    """Split one image's predictions into candidates and matched labels.

    Args:
        result: Its Ultralytics Results (boxes after NMS, down to the score floor).
        labels (np.ndarray): (n, 5) [cls, cx, cy, w, h] normalised, from its label file.
        hidden (np.ndarray | None): (h, 5) normalised hidden boxes from the manifest, or None without a manifest.
        asserted (np.ndarray | None): (nc,) bool, the classes the image's `partial:` entry names as exhaustively
            boxed or verified absent (ImagePartial.explicit): an unmatched prediction of one of them is a false alarm,
            never a missing box, so it is no candidate. None: every class may be missing.
    """
    height, width = result.orig_shape
    b = result.boxes
    pred = np.concatenate([b.cls.cpu().numpy()[:, None], b.xyxy.cpu().numpy(), b.conf.cpu().numpy()[:, None]],
                          1).astype(np.float64)
    pred[:, 1:5] = np.round(pred[:, 1:5], 2)  # CVAT's 0.01 px, so every export carries the very same box
    pred = pred[np.argsort(-pred[:, 5], kind="stable")]
    lab = yolo_to_xyxy(labels, width, height)
    overlap = box_iou(pred[:, 1:5], lab[:, 1:5]) >= match_iou  # (m, n)
    same = pred[:, :1] == lab[:, 0]
    cands = pred[~(overlap & same).any(1)]
    if asserted is not None:
        cands = cands[~asserted[cands[:, 0].astype(int)]]
    label_score = np.where(overlap & same, pred[:, 5:6], 0.0).max(0, initial=0.0)  # (n,)
    other = np.stack([np.full(len(lab), -1.0), np.zeros(len(lab))], 1)  # (n, 2) [cls, score]
    if len(pred) and len(lab):
        other_scores = np.where(overlap & ~same, pred[:, 5:6], 0.0)  # (m, n)
        best = other_scores.argmax(0)
        other[:, 1] = other_scores[best, np.arange(len(lab))]
        other[:, 0] = np.where(other[:, 1] > 0, pred[best, 0], -1)
    hit = None
    if hidden is not None:
        hit = greedy_match(cands, yolo_to_xyxy(hidden, width, height), match_iou) >= 0
    return MinedImage(file, name, int(width), int(height), lab, cands, label_score, other, hit,
                      0 if hidden is None else len(hidden))


def label_boxes(file: str, nc: int) -> np.ndarray:
    """The boxes of an image's YOLO label file -> (n, 5) [cls, cx, cy, w, h]; (0, 5) without a file."""
    from ultralytics.data.utils import img2label_paths

    rows = read_label_file(img2label_paths([file])[0], nc) or []
    return np.array([[c, *box] for _, c, box in rows], np.float64).reshape(-1, 5)


def predict_split(yolo, data: SplitImages, hidden: dict[str, np.ndarray] | None, opts: dict[str, Any]
                  ) -> list[MinedImage]:
    """Run Ultralytics' predictor over every image of the split (batched, streamed) and mine each -> MinedImage list.

    `hidden` is the manifest's boxes by dir_key (None without a manifest). With a `partial:` file, an image mines only
    the classes its entry does not name as labelled or negative (an image without `labeled_classes`, listed or not,
    is mined for every class but its negatives, as the loss's random-partial methods relax it). Images come back in
    sorted path order.
    """
    from ultralytics.utils import TQDM

    from .partial_labels import load_for_data

    files = sorted(data.images.images.values())
    kw = {k: opts[k] for k in ("iou", "imgsz", "batch", "max_det", "augment", "device") if opts[k] is not None}
    conf = min(SCORE_FLOOR, opts["conf"] or 1.0)
    partial = load_for_data(data.yaml_path)
    mined = []
    with tempfile.TemporaryDirectory(prefix="yolo-partial-mine-") as tmp:
        # a .txt source is read lazily in batches; a Python list would be decoded into memory whole
        source = Path(tmp) / "images.txt"
        source.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
        stream = yolo.predict(source=str(source), stream=True, verbose=False, save=False, conf=conf, **kw)
        expected = iter(files)  # the loader sorts its list as we did
        for result in TQDM(stream, total=len(files), desc=f"mine {data.split}"):
            file = next(expected, None)
            if result.path != file:  # the loader skips an image it cannot decode, with a warning only
                raise PartialDataError(f"{file}: unreadable image (the predictor could not decode it)")
            boxes = None if hidden is None else hidden.get(dir_key(file), _EMPTY5)
            entry = None if partial is None else partial.for_image(file)
            asserted = None if entry is None else entry.explicit(len(data.names))
            mined.append(mine_image(file, data.name_of[file], result, label_boxes(file, len(data.names)), boxes,
                                    opts["match_iou"], asserted))
        if (file := next(expected, None)) is not None:
            raise PartialDataError(f"{file}: unreadable image (the predictor could not decode it)")
    return mined


# ----------------------------------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    """Precision and recall of the candidate list against the hidden boxes, at every score threshold.

    Attributes:
        scores (np.ndarray): (k,) every candidate's score, descending.
        hit (np.ndarray): (k,) bool, whether that candidate matched a hidden box.
        hidden (int): Hidden boxes in the mined images (the recall denominator).
        target (float): The precision asked for.
        threshold (float | None): The lowest score threshold whose precision reaches target; None if none does.
    """

    scores: np.ndarray
    hit: np.ndarray
    hidden: int
    target: float
    threshold: float | None = None

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds, candidates, real): at each distinct score t (descending), the counts of candidates >= t."""
        last = np.r_[self.scores[1:] != self.scores[:-1], True] if len(self.scores) else np.zeros(0, bool)
        n = np.arange(1, len(self.scores) + 1)
        return self.scores[last], n[last], np.cumsum(self.hit)[last]

    def at(self, cut: float) -> tuple[int, int, float, float]:
        """(candidates, real, precision, recall) of the list cut at score >= cut (NaN where undefined)."""
        keep = self.scores >= cut
        n, real = int(keep.sum()), int(self.hit[keep].sum())
        return n, real, real / n if n else math.nan, real / self.hidden if self.hidden else math.nan


def calibrate(mined: list[MinedImage], target: float) -> Calibration:
    """Pool every image's candidates and hits into a Calibration, with the threshold reaching precision `target`."""
    scores = np.concatenate([m.cands[:, 5] for m in mined] + [np.zeros(0)])
    hit = np.concatenate([m.hit for m in mined] + [np.zeros(0, bool)])
    order = np.argsort(-scores, kind="stable")
    cal = Calibration(scores[order], hit[order], sum(m.hidden for m in mined), target)
    thresholds, n, real = cal.curve()
    reached = real / np.maximum(n, 1) >= target
    cal.threshold = float(thresholds[reached][-1]) if reached.any() and cal.hidden else None
    return cal


def calibrated_line(cal: Calibration, cut: float) -> str:
    """The one line that says how good the exported list is, from the manifest's hidden boxes."""
    n, real, p, r = cal.at(cut)
    if not n:
        return f"at score ≥ {cut:.3g}: 0 candidates, finding 0 % of the unlabelled objects"
    return (f"at score ≥ {cut:.3g}: {n} candidates, about {p * 100:.0f} % real, finding {r * 100:.0f} % of the "
            "unlabelled objects")


# --------------------------------------------------------------------------------------------------------- outputs
def exported(m: MinedImage, cut: float) -> np.ndarray:
    """The candidates of an image at score >= cut -> (j, 6)."""
    return m.cands[m.cands[:, 5] >= cut]


def rank(mined: list[MinedImage], cut: float) -> list[tuple[MinedImage, np.ndarray]]:
    """Images with their exported candidates, by expected missing boxes (sum of scores) descending, then name."""
    pairs = [(m, exported(m, cut)) for m in mined]
    return sorted(pairs, key=lambda p: (-float(p[1][:, 5].sum()), p[0].name))


def cvat_labels(names: dict[int, str]) -> list[CvatLabel]:
    """The label declarations of candidates.xml: every class, each with the source and score attributes."""
    from ultralytics.utils.plotting import colors

    attributes = (CvatAttribute("source", "select", False, "label", ("label", "candidate")),
                  CvatAttribute("score", "text", False, ""))
    return [CvatLabel(n, "#%02x%02x%02x" % colors(c), attributes) for c, n in names.items()]


def cvat_raw_labels(labels: list[CvatLabel]) -> str:
    """cvat_labels.json: the same declarations in CVAT's "Raw" label editor format, to paste when creating the task."""
    return json.dumps([{"name": lb.name, "color": lb.color, "type": "rectangle", "attributes": [
        {"name": a.name, "mutable": a.mutable, "input_type": a.input_type, "default_value": a.default,
         "values": list(a.values) or [a.default]} for a in lb.attributes]} for lb in labels], indent=1,
        ensure_ascii=False) + "\n"


def _score(s: float) -> str:
    return f"{s:.5f}"


def cvat_images(listed: list[tuple[MinedImage, np.ndarray]], names: dict[int, str]) -> list[CvatImage]:
    """One CvatImage per listed image (ranking order): its labels, then its candidates (source and score attributes)."""
    images = []
    for i, (m, cands) in enumerate(listed):
        labels = np.round(m.labels, 2).tolist()  # as candidates.json rounds them
        boxes = [CvatBox(names[int(c)], tuple(b), {"source": "label", "score": ""}) for c, *b in labels]
        boxes += [CvatBox(names[int(c)], (x1, y1, x2, y2), {"source": "candidate", "score": _score(s)},
                          source="auto") for c, x1, y1, x2, y2, s in cands.tolist()]
        images.append(CvatImage(i, m.name, m.width, m.height, boxes))
    return images


def coco_json(listed: list[tuple[MinedImage, np.ndarray]], names: dict[int, str]) -> str:
    """COCO detection JSON text: images (ranking order), categories (id = class + 1), labels and candidates as
    annotations, one entry per line.

    Candidates carry `score` and `"candidate": true`; both kinds carry CVAT-style `attributes` (source, score), which
    CVAT's COCO import keeps. Annotations are formatted directly (floats as Python's repr, which is valid JSON):
    json's encoder would take about as long as the prediction on a long list.
    """
    images, annotations = [], []
    for i, (m, cands) in enumerate(listed, 1):
        images.append(json.dumps({"id": i, "file_name": m.name, "width": m.width, "height": m.height},
                                 ensure_ascii=False))
        boxes = np.round(np.concatenate([m.labels[:, 1:5], cands[:, 1:5]]), 2)
        wh = np.round(boxes[:, 2:] - boxes[:, :2], 2)
        classes = np.concatenate([m.labels[:, 0], cands[:, 0]]).astype(int).tolist()
        scores = [None] * len(m.labels) + np.round(cands[:, 5], 5).tolist()
        for c, (x, y), (w, h), s in zip(classes, boxes[:, :2].tolist(), wh.tolist(), scores):
            kind = ('"candidate": false, "attributes": {"source": "label", "score": ""}' if s is None else
                    f'"candidate": true, "score": {s!r}, '
                    f'"attributes": {{"source": "candidate", "score": "{_score(s)}"}}')
            annotations.append(f'{{"id": {len(annotations) + 1}, "image_id": {i}, "category_id": {c + 1}, '
                               f'"bbox": [{x!r}, {y!r}, {w!r}, {h!r}], "area": {round(w * h, 4)!r}, "iscrowd": 0, '
                               f'"segmentation": [], {kind}}}')
    categories = [json.dumps({"id": c + 1, "name": n, "supercategory": ""}, ensure_ascii=False)
                  for c, n in names.items()]
    info = {"description": "yolo-partial mine: labels and candidate missing boxes", "version": "1.0"}

    def block(key: str, entries: list[str]) -> str:
        return f'"{key}": [' + ",".join(f"\n  {e}" for e in entries) + "\n ]"

    return "{\n " + ",\n ".join([f'"info": {json.dumps(info)}', '"licenses": []', block("images", images),
                                  block("categories", categories), block("annotations", annotations)]) + "\n}\n"


def yolo_rows(m: MinedImage, cands: np.ndarray) -> np.ndarray:
    """Candidates of image m, (k, 6) [cls, x1, y1, x2, y2, score] pixels -> (k, 6) [cls, cx, cy, w, h, score]
    normalised."""
    return np.concatenate([cands[:, :1], xyxy_to_yolo(cands[:, 1:5], m.width, m.height), cands[:, 5:]], 1)


def candidate_txt(m: MinedImage, cands: np.ndarray) -> str:
    """YOLO lines 'cls cx cy w h score' of an image's exported candidates."""
    rows = yolo_rows(m, cands)
    return ("%d %.6f %.6f %.6f %.6f %.5f\n" * len(rows)) % tuple(rows.ravel().tolist())  # one C-level format


def uncertain_json(mined: list[MinedImage], floor: float, cut: float) -> tuple[str, int]:
    """(uncertain.json text, box count): per image name, its candidates scoring in [floor, cut) as normalised
    [cls, cx, cy, w, h, score] rows, images without any left out."""
    images, count = {}, 0
    for m in mined:
        band = m.cands[(m.cands[:, 5] >= floor) & (m.cands[:, 5] < cut)]
        if len(band):
            images[m.name] = [[int(r[0]), *(round(float(x), 6) for x in r[1:5]), round(float(r[5]), 5)]
                              for r in yolo_rows(m, band)]
            count += len(band)
    head = {"format": UNCERTAIN_FORMAT, "floor": floor, "conf": cut}
    lines = ",".join(f"\n  {json.dumps(k, ensure_ascii=False)}: {json.dumps(v)}" for k, v in images.items())
    return json.dumps(head, ensure_ascii=False)[:-1] + ', "images": {' + lines + "\n }}\n", count


def write_csv(path: Path, header: list[str], rows: Iterable[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def ranking_rows(ranked: list[tuple[MinedImage, np.ndarray]], cut: float) -> Iterable[list]:
    """Rows of ranking.csv: rank, image, expected missing, candidates, labels, top score (, hidden, real candidates)."""
    for i, (m, cands) in enumerate(ranked, 1):
        row = [i, m.name, round(float(cands[:, 5].sum()), 4), len(cands), len(m.labels),
               _score(float(cands[:, 5].max())) if len(cands) else ""]
        if m.hit is not None:
            row += [m.hidden, int(m.hit[m.cands[:, 5] >= cut].sum())]
        yield row


def suspect_rows(mined: list[MinedImage], names: dict[int, str], cut: float) -> list[list]:
    """Rows of suspect_labels.csv: labels whose class the model does not predict there at score >= cut, lowest first.

    `other` names the best prediction of another class on the same box, a hint that the label's class is wrong.
    """
    rows = []
    for m in mined:
        xywh = xyxy_to_yolo(m.labels[:, 1:5], m.width, m.height)
        for j in np.flatnonzero(m.label_score < cut):
            c, (oc, os_) = int(m.labels[j, 0]), m.other[j]
            other = names[int(oc)] if oc >= 0 and os_ >= cut else ""
            rows.append((m.label_score[j], [m.name, c, names[c], *(f"{v:.6f}" for v in xywh[j]),
                                            _score(m.label_score[j]), other, _score(os_) if other else ""]))
    return [row for _, row in sorted(rows, key=lambda r: (r[0], r[1][0]))]


def draw(m: MinedImage, cands: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """The image with its labels (green, class) and its first REVIEW_MAX_DRAWN candidates (orange, class and score),
    longest side 480-960 px."""
    from ultralytics.utils.plotting import Annotator

    im = cv2.imread(m.file)
    if im is None:
        raise PartialDataError(f"{m.file}: unreadable image")
    scale = min(max(max(m.width, m.height), 480), 960) / max(m.width, m.height)  # small images up, big ones down
    im = cv2.resize(im, (round(m.width * scale), round(m.height * scale)), interpolation=cv2.INTER_AREA if scale < 1
                    else cv2.INTER_LINEAR)
    ann = Annotator(im, example=" ".join(names.values()))
    for c, *b in m.labels.tolist():
        ann.box_label([v * scale for v in b], names[int(c)], color=LABEL_BGR)
    for c, *b, s in cands[:REVIEW_MAX_DRAWN][::-1].tolist():  # the highest score drawn last, on top
        ann.box_label([v * scale for v in b], f"{names[int(c)]} {s:.2f}", color=CANDIDATE_BGR)
    return ann.result()


def _jpeg_b64(im: np.ndarray) -> str:
    return base64.b64encode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()).decode()


def review_html(drawn: list[tuple[MinedImage, np.ndarray, np.ndarray]], names: dict[int, str], summary: str) -> str:
    """One self-contained HTML page (images inline, no network) of the top images, their candidates and scores."""
    esc = html.escape
    parts = ["<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>yolo-partial mine: review</title>",
             "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:1em;vertical-align:top}"
             "img{max-width:100%}td{padding:0 .6em}.l{color:#28c828}.c{color:#ff8c00}</style></head><body>",
             f"<h1>Candidate missing labels</h1><p>{esc(summary)}</p>",
             "<p><b class=\"l\">green: labels</b>, <b class=\"c\">orange: candidates</b> (class and score). "
             "Images ranked by expected missing boxes (sum of candidate scores).</p>"]
    for i, (m, cands, im) in enumerate(drawn, 1):
        rows = "".join(f"<tr><td>{esc(names[int(c)])}</td><td>{s:.3f}</td></tr>" for c, *_, s in cands.tolist())
        more = len(cands) - REVIEW_MAX_DRAWN
        rows += f"<tr><td colspan=\"2\">({more} more not drawn)</td></tr>" if more > 0 else ""
        parts.append(f"<figure><figcaption><b>#{i} {esc(m.name)}</b>: expected missing {cands[:, 5].sum():.2f}, "
                     f"{len(cands)} candidates, {len(m.labels)} labels</figcaption>"
                     f"<img src=\"data:image/jpeg;base64,{_jpeg_b64(im)}\" alt=\"{esc(m.name)}\">"
                     f"<table><tr><th>candidate</th><th>score</th></tr>{rows}</table></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def contact_sheet(drawn: list[np.ndarray], tile: int = SHEET_TILE_PX, cols: int = 4) -> np.ndarray:
    """Drawn images letterboxed into a grid of tile x tile cells, each numbered by rank -> BGR image."""
    rows = max(1, math.ceil(len(drawn) / cols))
    sheet = np.full((rows * tile, cols * tile, 3), 114, np.uint8)
    for i, im in enumerate(drawn):
        s = tile / max(im.shape[:2])
        size = (max(1, round(im.shape[1] * s)), max(1, round(im.shape[0] * s)))
        im = cv2.resize(im, size, interpolation=cv2.INTER_AREA)
        y, x = i // cols * tile + (tile - im.shape[0]) // 2, i % cols * tile + (tile - im.shape[1]) // 2
        sheet[y:y + im.shape[0], x:x + im.shape[1]] = im
        cv2.putText(sheet, f"#{i + 1}", (i % cols * tile + 4, i // cols * tile + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                    (255, 255, 255), 2, cv2.LINE_AA)
    return sheet


def pr_rows(cal: Calibration) -> Iterable[list]:
    """Rows of pr.csv: threshold, candidates, real, precision, recall at every distinct candidate score."""
    for t, n, real in zip(*cal.curve()):
        yield [float(t), int(n), int(real), float(real / n), float(real / cal.hidden) if cal.hidden else ""]


def plot_pr(cal: Calibration, cut: float, path: Path) -> None:
    """pr.png: the precision-recall curve and precision and recall against the score threshold, the cut marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t, n, real = cal.curve()
    if len(t) > 2000:  # a curve of 2000 points looks the same and draws much faster
        keep = np.unique(np.linspace(0, len(t) - 1, 2000).round().astype(int))
        t, n, real = t[keep], n[keep], real[keep]
    p, r = real / np.maximum(n, 1), real / max(cal.hidden, 1)
    n_cut, _, p_cut, r_cut = cal.at(cut)
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.2)  # fixed: no layout passes
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(r, p, color="tab:blue")
    if n_cut:
        ax1.plot([r_cut], [p_cut], "o", color="tab:orange", label=f"score ≥ {cut:.3g}: {n_cut} candidates")
        ax1.legend(loc="upper right")
    ax1.set(xlabel="recall of the hidden boxes", ylabel="precision (share of candidates that are hidden boxes)",
            xlim=(0, 1), ylim=(0, 1.02), title=f"Candidates vs {cal.hidden} hidden boxes")
    ax2.plot(t, p, label="precision")
    ax2.plot(t, r, label="recall")
    ax2.axvline(cut, color="tab:orange", ls="--", label=f"cut {cut:.3g}")
    ax2.axhline(cal.target, color="grey", ls=":", label=f"precision target {cal.target:g}")
    ax2.set(xlabel="score threshold", xlim=(0, 1), ylim=(0, 1.02), title="Precision and recall by threshold")
    ax2.legend(loc="best")
    fig.savefig(path, dpi=100)


def write_zip(path: Path, listed: list[tuple[MinedImage, np.ndarray]]) -> None:
    """images.zip: the listed images stored under their candidates.xml names, fixed timestamps (reproducible)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for m, _ in listed:
            info = zipfile.ZipInfo(m.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, Path(m.file).read_bytes())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_review(tmp: Path, listed: list[tuple[MinedImage, np.ndarray]], names: dict[int, str], top: int,
                 summary: str) -> None:
    """review.html (the top images) and review.png (contact sheet of the top SHEET_TILES)."""
    from .patches import install_offline_guards

    install_offline_guards()  # non-ASCII class names make the Annotator fetch a font
    drawn = [(m, c, draw(m, c, names)) for m, c in listed[:max(top, SHEET_TILES)]]
    (tmp / "review.html").write_text(review_html(drawn[:top], names, summary), encoding="utf-8")
    cv2.imwrite(str(tmp / "review.png"), contact_sheet([im for *_, im in drawn[:SHEET_TILES]]))


def write_outputs(tmp: Path, mined: list[MinedImage], data: SplitImages, cut: float, cal: Calibration | None,
                  opts: dict[str, Any], record: dict[str, Any]) -> None:
    """Write every output file of a mine run into the (temporary) folder tmp; `record` becomes mine.json.

    The drawings and the PR plot (OpenCV and Agg, which mostly release the GIL) are made in worker threads while this
    one formats the text files.
    """
    names = data.names
    ranked = rank(mined, cut)
    listed = [(m, c) for m, c in ranked if len(c)]
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(write_review, tmp, listed, names, opts["top"], record["line"])]
        if cal is not None:
            jobs.append(pool.submit(plot_pr, cal, cut, tmp / "pr.png"))
            write_csv(tmp / "pr.csv", ["threshold", "candidates", "real", "precision", "recall"], pr_rows(cal))
        labels = cvat_labels(names)
        write_cvat_images(tmp / "candidates.xml", cvat_images(listed, names), labels,
                          f"yolo-partial mine: {data.yaml_path.parent.name} {data.split}")
        (tmp / "cvat_labels.json").write_text(cvat_raw_labels(labels), encoding="utf-8")
        (tmp / "candidates.json").write_text(coco_json(listed, names), encoding="utf-8")
        (tmp / "candidates").mkdir()
        for m, cands in listed:
            txt = (tmp / "candidates" / m.name).with_suffix(".txt")
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(candidate_txt(m, cands), encoding="utf-8")
        head = ["rank", "image", "expected_missing", "candidates", "labels", "top_score"]
        write_csv(tmp / "ranking.csv", head + (["hidden", "real"] if cal else []), ranking_rows(ranked, cut))
        suspects = suspect_rows(mined, names, cut)
        write_csv(tmp / "suspect_labels.csv", ["image", "cls", "name", "cx", "cy", "w", "h", "score", "other_name",
                                               "other_score"], suspects)
        if opts["images"]:
            write_zip(tmp / "images.zip", listed)
        for job in jobs:
            job.result()  # re-raises a worker's error here, inside atomic_dir
    record.update(candidates=int(sum(len(c) for _, c in listed)), candidate_images=len(listed),
                  expected_missing=round(float(sum(c[:, 5].sum() for _, c in listed)), 4),
                  suspect_labels=len(suspects), files={"candidates.json": sha256(tmp / "candidates.json")})
    if opts["uncertain"] is not None:
        floor = float(opts["uncertain"])
        text, count = uncertain_json(mined, floor, cut)
        (tmp / UNCERTAIN).write_text(text, encoding="utf-8")
        record["uncertain"] = {"floor": floor, "boxes": count}
        if cal is not None:  # the band's share of real objects: what ignoring it spares, and what it wrongly spares
            record["uncertain"]["real"] = cal.at(floor)[1] - cal.at(cut)[1]
        record["files"][UNCERTAIN] = sha256(tmp / UNCERTAIN)
    (tmp / RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------- the run
def out_dir(opts: dict[str, Any]) -> Path:
    """out=, else <project>/<name> incremented like Ultralytics' runs (project default: runs_dir/mine)."""
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.files import increment_path

    if opts["out"] is not None:
        return Path(str(opts["out"])).expanduser().absolute()
    project = Path(str(opts["project"] or "")).expanduser()
    if not project.is_absolute():
        project = Path(SETTINGS["runs_dir"]) / "mine" / project
    return increment_path(project / str(opts["name"]), exist_ok=opts["exist_ok"]).absolute()


def choose_cut(opts: dict[str, Any], cal: Calibration | None) -> tuple[float, str]:
    """The exported list's score cut and where it came from: 'given', 'calibrated' or 'default'."""
    if opts["conf"] is not None:
        return float(opts["conf"]), "given"
    if cal is not None and cal.threshold is not None:
        return cal.threshold, "calibrated"
    return DEFAULT_CONF, "default"


def report_line(cal: Calibration | None, cut: float, how: str, data: SplitImages, n_cands: int) -> str:
    """The line that tells how far the list can be trusted: calibrated figures, or that it is uncalibrated."""
    if cal is None:
        return (f"uncalibrated: {data.yaml_path} has no hidden-box manifest for its {data.split} images, so how many "
                f"of the {n_cands} candidates at score ≥ {cut:.3g} are real is unknown; to calibrate, make a copy "
                f"with `yolo-partial split data={data.yaml_path.name} mode=keep ratio=0.9`, train on it and mine it")
    line = calibrated_line(cal, cut)
    if cal.threshold is None and how != "given":
        line += f" (no score threshold reaches precision {cal.target:g}; cut at the default conf {cut:.3g})"
    return line


def run_mine(args: dict[str, Any]) -> Path:
    """CLI entry: `args` are mine's keys (typed by smart_value), see MINE_KEYS -> the output folder."""
    from ultralytics.utils import LOGGER

    opts = check_args(args, MINE_KEYS)
    if opts["model"] is None:
        raise PartialConfigError("mine needs model=PATH: expected a detection checkpoint such as "
                                 "runs/detect/train/weights/best.pt")
    yolo = load_detector(opts["model"])
    data_arg = opts["data"] or yolo.overrides.get("data")
    if not data_arg:
        raise PartialConfigError("mine needs data=PATH: the checkpoint names no dataset; expected a data YAML")
    data = load_split(resolve_data(str(data_arg)), opts["split"])
    check_model_names(str(opts["model"]), yolo.names, data)
    manifest, boxes = hidden_boxes(data)
    out = out_dir(opts)
    check_replaceable(out)  # now, not after predicting for an hour
    mined = predict_split(yolo, data, boxes if manifest else None, opts)
    cal = calibrate(mined, opts["precision"]) if manifest else None
    cut, how = choose_cut(opts, cal)
    n_cands = sum(int((m.cands[:, 5] >= cut).sum()) for m in mined)
    line = report_line(cal, cut, how, data, n_cands)
    record = {"format": RECORD_FORMAT, "data": str(data.yaml_path), "split": data.split,
              "model": str(Path(str(opts["model"])).absolute()), "names": list(data.names.values()),
              "images": len(mined), "conf": cut, "conf_from": how, "score_floor": SCORE_FLOOR,
              "match_iou": opts["match_iou"], "iou": opts["iou"], "line": line, "calibration": None}
    if cal is not None:
        n, real, p, r = cal.at(cut)
        record["calibration"] = {"manifest": str(manifest), "hidden": cal.hidden, "precision_target": cal.target,
                                 "threshold": cal.threshold, "candidates": n, "real": real,
                                 "precision": None if math.isnan(p) else p, "recall": None if math.isnan(r) else r}
    producer = {"command": "mine", **{k: str(v) if isinstance(v, Path) else v for k, v in opts.items()}}
    with atomic_dir(out, producer) as tmp:
        write_outputs(tmp, mined, data, cut, cal, opts, record)
    LOGGER.info(f"mine: {len(mined)} {data.split} images, {record['candidates']} candidates at score ≥ {cut:.3g} in "
                f"{record['candidate_images']} images (expected missing {record['expected_missing']:.1f}), "
                f"{record['suspect_labels']} suspect labels")
    LOGGER.info(line)
    if (u := record.get("uncertain")) is not None:
        real = f", {u['real']} of them real (hidden boxes)" if "real" in u else ""
        LOGGER.info(f"mine: {u['boxes']} uncertain predictions at score {u['floor']:.3g} to {cut:.3g}{real} written to "
                    f"{UNCERTAIN}: `accept` makes them ignore regions")
    LOGGER.info(f"mine: results saved to {out}")
    return out
