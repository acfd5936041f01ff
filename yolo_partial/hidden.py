"""Hidden-object recall: does a model detect the training objects whose labels a split removed?

A partial split writes a manifest of every box it removed (the hidden.json format). A model that learned to treat
unlabelled objects as background scores those boxes low, so their recall is the direct measure of suppression; the
recall of the boxes still labelled in the same images gives the level to compare it with.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import dataset_file, dataset_root, load_yaml
from .errors import PartialDataError
from .labels import MANIFEST_FORMAT, read_label_file

PREDICT_CONF = 0.001  # predict nearly everything, so mean scores see the low-confidence detections as well
PREDICT_MAX_DET = 300
_EMPTY = np.zeros((0, 5), np.float32)


def image_key(im_file: str | Path) -> str:
    """Absolute, normalised form of an image path; symlinks are kept, since split outputs link to their sources."""
    return os.path.normpath(os.path.abspath(im_file))


@dataclass
class Manifest:
    """A loaded hidden-object manifest.

    Attributes:
        path (Path): The manifest file.
        root (Path): Absolute folder that the manifest's image paths are relative to.
        names (list | None): Class names in class-index order, from the summary's per_class keys, when present.
        summary (dict): The manifest's summary block, as written by split or shapes.
        boxes (dict[str, np.ndarray]): {image_key(image): float32 array (n, 5) of [cls, cx, cy, w, h] normalised}.
    """

    path: Path
    root: Path
    names: list | None
    summary: dict
    boxes: dict[str, np.ndarray] = field(default_factory=dict)

    def for_image(self, im_file: str | Path) -> np.ndarray:
        """Hidden boxes of one image, given in any path form of the same file -> float32 array (n, 5), maybe (0, 5)."""
        return self.boxes.get(image_key(im_file), _EMPTY)

    @property
    def n_boxes(self) -> int:
        """Number of hidden boxes over all images."""
        return sum(len(b) for b in self.boxes.values())


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with one manifest 'removed' entry, or None when it is valid."""
    if not isinstance(entry, dict) or not {"image", "cls", "box"} <= set(entry):
        return "lacks one of image, cls, box"
    if not isinstance(entry["image"], str) or not entry["image"]:
        return "has no image path"
    cls = entry["cls"]
    if isinstance(cls, bool) or not isinstance(cls, int) or cls < 0:
        return f"has class {cls!r}, not an integer >= 0"
    box = entry["box"]
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in box)):
        return f"has box {box!r}, not 4 numbers in [0, 1]"
    return None


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a hidden-object manifest (JSON) -> Manifest; one-line PartialDataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PartialDataError(f"hidden-object manifest not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PartialDataError(f"{path}: unreadable manifest ({e}): expected {MANIFEST_FORMAT} JSON") from e
    found = data.get("format") if isinstance(data, dict) else None
    if found != MANIFEST_FORMAT:
        raise PartialDataError(f"{path}: manifest format {found!r}: expected '{MANIFEST_FORMAT}'")
    removed = data.get("removed")
    if not isinstance(removed, list):
        raise PartialDataError(f"{path}: 'removed' is missing or not a list: expected a list of removed boxes")
    for i, entry in enumerate(removed):
        problem = _entry_problem(entry)
        if problem:
            raise PartialDataError(
                f"{path}: removed[{i}] {problem}: expected {{\"image\": str, \"cls\": int, \"box\": [cx, cy, w, h]}}")
    root = Path(image_key(path.parent / str(data.get("root") or ".")))
    rows: dict[str, list] = {}
    for entry in removed:
        rows.setdefault(image_key(root / entry["image"]), []).append([entry["cls"], *entry["box"]])
    summary = data.get("summary") if isinstance(data.get("summary"), dict) else {}
    per_class = summary.get("per_class")
    names = list(per_class) if isinstance(per_class, dict) and per_class else None
    return Manifest(path, root, names, summary, {k: np.array(v, np.float32) for k, v in rows.items()})


def find_manifest(data_yaml: str | Path) -> Path | None:
    """The manifest named by a data YAML's top-level `hidden:` key (relative to the dataset root), or None."""
    return dataset_file(data_yaml, "hidden", "a manifest JSON file")


def best_scores(hidden, preds, iou: float = 0.5):
    """Best score per hidden box among same-class predictions overlapping it with IoU >= iou (0 where none).

    Args:
        hidden (np.ndarray | torch.Tensor): (n, 5) boxes [cls, cx, cy, w, h], normalised or pixels.
        preds (np.ndarray | torch.Tensor): (m, 6) predictions [cls, cx, cy, w, h, score] in the same units.
        iou (float): IoU threshold.

    Returns:
        (np.ndarray | torch.Tensor): (n,) float32 scores; a tensor on hidden's device when hidden is a tensor.
    """
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywh2xyxy

    h = torch.as_tensor(hidden, dtype=torch.float32).reshape(-1, 5)
    p = torch.as_tensor(preds, dtype=torch.float32, device=h.device).reshape(-1, 6)
    scores = h.new_zeros(len(h))
    if len(h) and len(p):
        # eps far below box_iou's default: normalised boxes of small objects have areas near 1e-5
        overlap = box_iou(xywh2xyxy(h[:, 1:5]), xywh2xyxy(p[:, 1:5]), eps=1e-12)  # (n, m)
        match = (overlap >= iou) & (h[:, :1] == p[:, 0])
        scores = torch.where(match, p[:, 5], 0.0).amax(1)
    return scores if isinstance(hidden, torch.Tensor) else scores.cpu().numpy()


def hidden_hits(hidden: np.ndarray, labelled: np.ndarray, preds: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Rank one image's predictions against its hidden boxes, leaving out those that find a labelled box.

    A prediction overlapping a labelled box of its class (IoU >= iou) is neither a hit nor a false alarm; the others,
    in descending score, greedily take the best-overlapping unmatched hidden box of their class (IoU >= iou).

    Args:
        hidden (np.ndarray): (n, 5) [cls, cx, cy, w, h] hidden boxes.
        labelled (np.ndarray): (k, 5) the image's labelled boxes.
        preds (np.ndarray): (m, 6) [cls, cx, cy, w, h, score] predictions, same units.
        iou (float): IoU threshold.

    Returns:
        (np.ndarray): (m', 3) [score, cls, hit] for the predictions that count.
    """
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywh2xyxy

    p = torch.as_tensor(preds, dtype=torch.float32).reshape(-1, 6)
    p = p[p[:, 5].argsort(descending=True)]
    lab = torch.as_tensor(labelled, dtype=torch.float32).reshape(-1, 5)
    if len(lab) and len(p):
        on_label = (box_iou(xywh2xyxy(p[:, 1:5]), xywh2xyxy(lab[:, 1:5]), eps=1e-12) >= iou) & (p[:, :1] == lab[:, 0])
        p = p[~on_label.any(1)]
    h = torch.as_tensor(hidden, dtype=torch.float32).reshape(-1, 5)
    hit = torch.zeros(len(p))
    if len(h) and len(p):
        overlap = box_iou(xywh2xyxy(p[:, 1:5]), xywh2xyxy(h[:, 1:5]), eps=1e-12)
        overlap = torch.where((overlap >= iou) & (p[:, :1] == h[:, 0]), overlap, -1.0)
        taken = torch.zeros(len(h), dtype=torch.bool)
        for i in range(len(p)):
            row = overlap[i].masked_fill(taken, -1.0)
            j = int(row.argmax())
            if row[j] >= 0:
                taken[j], hit[i] = True, 1.0
    return torch.stack((p[:, 5], p[:, 0], hit), 1).numpy()


def hidden_ap(rows: np.ndarray, hidden_cls: np.ndarray) -> float:
    """Mean over the hidden boxes' classes of the AP of ranked predictions (hidden_hits rows) against them."""
    from ultralytics.utils.metrics import compute_ap

    aps = []
    for c in np.unique(hidden_cls):
        r = rows[rows[:, 1] == c]
        r = r[np.argsort(-r[:, 0], kind="stable")]
        tp = np.cumsum(r[:, 2])
        n = int((hidden_cls == c).sum())
        recall, precision = tp / n, tp / np.arange(1, len(r) + 1)
        aps.append(compute_ap(recall, precision)[0] if len(r) else 0.0)
    return float(np.mean(aps)) if aps else math.nan


def _labelled_boxes(im_file: str) -> np.ndarray:
    """The boxes still labelled for an image, from its YOLO label file -> float32 (n, 5); (0, 5) without a file."""
    from ultralytics.data.utils import img2label_paths

    rows = read_label_file(img2label_paths([im_file])[0])
    return np.array([[c, *box] for _, c, box in rows], np.float32).reshape(-1, 5) if rows else _EMPTY


def _predictions(result) -> torch.Tensor:
    """One Ultralytics Results -> (m, 6) [cls, cx, cy, w, h, score], coordinates normalised to the original image."""
    b = result.boxes
    return torch.cat([b.cls[:, None], b.xywhn, b.conf[:, None]], 1).float().cpu()


def check_manifest_for(manifest: Manifest, data_yaml: str | Path) -> None:
    """Raise a one-line error unless every image of the manifest is a train image of the dataset and every class is
    one of its classes: a manifest written for another dataset would otherwise give meaningless recall."""
    from .labels import class_names
    from .split import train_set

    data_yaml = Path(data_yaml)
    cfg = load_yaml(data_yaml, "data YAML")
    nc = len(class_names(data_yaml, cfg))
    images = {os.path.realpath(p) for p in train_set(data_yaml, cfg, dataset_root(data_yaml, cfg)).images.values()}
    foreign = [k for k in manifest.boxes if os.path.realpath(k) not in images]
    if foreign:
        raise PartialDataError(
            f"{manifest.path}: {len(foreign)} of {len(manifest.boxes)} images with hidden boxes are not train images of "
            f"{data_yaml} (first {foreign[0]}): expected the manifest written by split for this dataset")
    classes = {int(c) for boxes in manifest.boxes.values() for c in boxes[:, 0]}
    if classes and max(classes) >= nc:
        raise PartialDataError(f"{manifest.path}: hidden boxes of class {max(classes)}, but {data_yaml} has {nc} classes: "
                               f"expected the manifest written for this dataset")


def _check_images(manifest: Manifest, files: list[str]) -> None:
    """Raise a one-line error naming the first image of the manifest that does not exist, and how many are missing."""
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise PartialDataError(
            f"{manifest.path}: {len(missing)} of {len(files)} images with hidden boxes not found, first {missing[0]}: "
            f"expected the image paths relative to {manifest.root}")


def _recall(scores: np.ndarray, conf: float) -> float:
    """Share of scores >= conf (NaN when there are none)."""
    return float((scores >= conf).mean()) if len(scores) else math.nan


def hidden_recall(model, manifest: Manifest, conf: float = 0.25, iou: float = 0.5, imgsz: int = 640, batch: int = 16,
                  device=None, max_images: int | None = None) -> dict:
    """Recall and mean score of the hidden boxes of a manifest's images, next to the recall of their labelled boxes.

    Args:
        model (str | Path | YOLO): A checkpoint or model path, or a loaded Ultralytics YOLO object.
        manifest (Manifest): The hidden boxes, from load_manifest.
        conf (float): Score at which a box counts as found.
        iou (float): IoU at which a same-class prediction matches a box.
        imgsz (int): Inference size.
        batch (int): Images per prediction call.
        device: Ultralytics device argument.
        max_images (int | None): Use only the first images (in sorted path order) that hold hidden boxes.

    Returns:
        (dict): images, hidden_boxes, hidden_recall, hidden_ap, hidden_score (mean best score), labelled_boxes,
            labelled_recall, per_class {name: {hidden, recall, score}}, conf, iou. Recalls are NaN without boxes.
            hidden_ap is threshold-free (see hidden_hits): it does not depend on how the model's scores are calibrated,
            which a recall at a fixed conf does.
    """
    from ultralytics import YOLO
    from ultralytics.utils import TQDM

    if isinstance(model, (str, Path)):
        model = YOLO(str(model))
    files = sorted(manifest.boxes)[:max_images]
    _check_images(manifest, files)
    none = np.zeros(0, np.float32)
    hidden, hidden_s, labelled_s = [_EMPTY], [none], [none]  # seeded so that a manifest without boxes concatenates
    ranked = [np.zeros((0, 3), np.float32)]
    chunks = [files[i:i + batch] for i in range(0, len(files), batch)]
    for chunk in TQDM(chunks, desc="Hidden-object recall"):
        # one call per chunk: a list source is decoded whole, so chunks bound memory on large training sets
        results = model.predict(source=chunk, stream=True, verbose=False, conf=min(conf, PREDICT_CONF),
                                max_det=PREDICT_MAX_DET, imgsz=imgsz, device=device)
        for im_file, result in zip(chunk, results, strict=True):
            preds = _predictions(result)
            boxes = manifest.for_image(im_file)
            hidden.append(boxes)
            hidden_s.append(best_scores(boxes, preds, iou))
            labelled = _labelled_boxes(im_file)
            labelled_s.append(best_scores(labelled, preds, iou))
            ranked.append(hidden_hits(boxes, labelled, preds.cpu().numpy(), iou))
    cls, hs, ls = np.concatenate(hidden)[:, 0].astype(int), np.concatenate(hidden_s), np.concatenate(labelled_s)
    classes = np.unique(cls).tolist()
    names = _class_names(manifest, getattr(model, "names", None), classes)
    per_class = {names[c]: {"hidden": int((cls == c).sum()), "recall": _recall(hs[cls == c], conf),
                            "score": float(hs[cls == c].mean())} for c in classes}
    return {"images": len(files), "hidden_boxes": len(hs), "hidden_recall": _recall(hs, conf),
            "hidden_ap": hidden_ap(np.concatenate(ranked), cls),
            "hidden_score": float(hs.mean()) if len(hs) else math.nan, "labelled_boxes": len(ls),
            "labelled_recall": _recall(ls, conf), "per_class": per_class, "conf": conf, "iou": iou}


def _class_names(manifest: Manifest, model_names, classes: list[int]) -> dict[int, str]:
    """{class id: display name}: the manifest's names (the dataset's) when they cover every id, else the model's."""
    if manifest.names and all(c < len(manifest.names) for c in classes):
        return {c: str(manifest.names[c]) for c in classes}
    model_names = model_names if isinstance(model_names, dict) else {}
    return {c: str(model_names.get(c, c)) for c in classes}


def format_recall(result: dict) -> str:
    """Multi-line table of a hidden_recall result in Ultralytics' val print style: overall row, then one per class."""
    head = ("%22s" + "%11s" * 6) % ("Class", "Images", "Hidden", "Recall", "Score", "Labelled", "Recall")
    title = (f"Hidden-object recall at IoU {result.get('iou', 0.5):g}, score {result.get('conf', 0.25):g}: Hidden = "
             "boxes the split removed, Labelled = boxes still labelled in the same images (the reference level); "
             f"hidden AP50 {result.get('hidden_ap', math.nan):.3g} (threshold-free: predictions ranked against the "
             "hidden boxes, those on labelled boxes left out)")
    lines = [title, head, ("%22s" + "%11i" * 2 + "%11.3g" * 2 + "%11i" + "%11.3g") % (
        "all", result["images"], result["hidden_boxes"], result["hidden_recall"], result["hidden_score"],
        result["labelled_boxes"], result["labelled_recall"])]
    for name, row in result["per_class"].items():
        lines.append(("%22s" + "%11s" + "%11i" + "%11.3g" * 2) % (name, "", row["hidden"], row["recall"], row["score"]))
    return "\n".join(lines)
