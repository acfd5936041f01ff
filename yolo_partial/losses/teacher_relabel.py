"""The teacher's relabelling pass (`teacher_relabel=E`): every E epochs it detects on the training images themselves and
its confident boxes become labels of the epochs that follow, carried through augmentation as marker instances.

Why: the per-batch teacher only teaches an object while the student's own average still scores it above tau_hi, and a
student taught that unlabelled objects are background soon stops doing so. On the 40-epoch extreme split it mined at
most 0.5 positives per image, while a finished model mining the same images in the review loop (`yolo-partial mine`)
found 1.8 per image at 80 % precision, and retraining on them was what closed the gap. Relabelling is that loop inside
one run: the boxes found once stay positives until the next pass replaces them, whatever the student scores them
meanwhile. Each pass replaces the previous one's boxes (the loop's rounds mine afresh too).

The pass sees every training image once, letterboxed to `imgsz` as Ultralytics' validator sees it (no mosaic, no
augmentation), keeps the teacher's boxes at or above its class's threshold, skips those on a labelled object (as
`split_boxes` does in the batches) and maps them back to the image's normalised coordinates. The threshold is measured
where unlabelled objects cannot be mistaken for false boxes: per class, the lowest score from which on the teacher's
detections on the validation images reach precision `teacher_precision` (`precision_threshold`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from ultralytics.utils.patches import imread

from .teacher import LO_MIN, Mined, detections, split_boxes, teacher_predictions

BATCH = 32  # images per teacher forward in the pass
PAD = 114  # letterbox fill, as Ultralytics pads
NONE = np.zeros((0, 5), dtype=np.float32)  # an image without relabelled boxes: (0, 5) class, xywh normalised


def letterbox(im: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A (H, W, 3) BGR image resized (long side `size`, aspect kept) and padded centred to (size, size, 3) RGB, and
    (left, top, width, height) in pixels of the image inside the square."""
    h0, w0 = im.shape[:2]
    r = size / max(h0, w0)
    w, h = min(size, math.ceil(w0 * r)), min(size, math.ceil(h0 * r))  # as Ultralytics' load_image
    if (w, h) != (w0, h0):
        im = cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA)
    if im.ndim == 2:
        im = im[..., None]
    left, top = round((size - w) / 2 - 0.1), round((size - h) / 2 - 0.1)
    out = np.full((size, size, im.shape[2]), PAD, dtype=im.dtype)
    out[top : top + h, left : left + w] = im
    return out[..., ::-1] if out.shape[2] == 3 else out, (float(left), float(top), float(w), float(h))


def to_image(rows: torch.Tensor, size: int, place: tuple[float, float, float, float]) -> np.ndarray:
    """(n, 7) mined rows (image, class, xywh normalised to the letterboxed square, score) -> (n, 5) class, xywh
    normalised to the image itself, clipped to it; boxes left empty by the clip are dropped."""
    left, top, w, h = place
    xy = rows[:, 2:4].double() * size - rows.new_tensor([left, top]).double()
    half = rows[:, 4:6].double() * size / 2
    lo = torch.minimum(torch.maximum(xy - half, xy.new_zeros(2)), xy.new_tensor([w, h]))
    hi = torch.minimum(torch.maximum(xy + half, xy.new_zeros(2)), xy.new_tensor([w, h]))
    keep = ((hi - lo) > 0).all(1)
    lo, hi, wh = lo[keep], hi[keep], xy.new_tensor([w, h])
    out = torch.cat((rows[keep, 1:2].double(), (lo + hi) / 2 / wh, (hi - lo) / wh), 1)
    return out.float().cpu().numpy()


@torch.no_grad()
def relabel_images(teacher: Any, model: torch.nn.Module, dataset: Any, tau: torch.Tensor, size: int) -> dict[str, np.ndarray]:
    """Run the teacher's `model` over every image of a YOLO dataset -> {image file: (n, 5) float32 class, xywh
    normalised} of its boxes scored >= tau[class] (C,) after the teacher's NMS that overlap no label and that its
    `allowed` lets through (`Teacher`'s nms, gt_iou, classes and partial_empty, as in the training batches)."""
    dev = next(model.parameters()).device
    flag = getattr(dataset, "cv2_flag", cv2.IMREAD_COLOR)
    tau = tau.to(dev)
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(dataset.labels), BATCH):
        labels = dataset.labels[start : start + BATCH]
        ims, places = zip(*(letterbox(_read(lb["im_file"], flag), size) for lb in labels))
        img = torch.from_numpy(np.ascontiguousarray(np.stack(ims).transpose(0, 3, 1, 2))).to(dev).float() / 255
        boxes, scores = teacher_predictions(model, img)
        scores = scores.masked_fill(~(torch.isfinite(boxes).all(-1, keepdim=True) & torch.isfinite(scores)), 0.0)
        batch = _labels_in_square(labels, places, size, dev)
        dets = detections(boxes, scores, float(tau.min().clamp(min=LO_MIN)), teacher.nms)
        mined = split_boxes(boxes, scores, batch, (size, size), tau, tau, teacher.nms, teacher.gt_iou, dets=dets,
                            classes=teacher.classes)  # fmt: skip
        pos = teacher.allowed(Mined(mined.pos, mined.pos[:0]), batch).pos
        for i, lb in enumerate(labels):
            rows = pos[pos[:, 0] == i]
            out[lb["im_file"]] = to_image(rows, size, places[i]) if len(rows) else NONE
    return out


def _read(path: str, flag: int) -> np.ndarray:
    im = imread(path, flags=flag)
    if im is None:
        raise FileNotFoundError(f"teacher_relabel: cannot read training image {Path(path)}: expected an image file")
    return im


def _labels_in_square(labels: list[dict], places: tuple, size: int, dev) -> dict[str, torch.Tensor]:
    """The images' labels (batch_idx, cls, bboxes xywh) normalised to their letterboxed squares."""
    idx, cls, boxes = [], [], []
    for i, (lb, (left, top, w, h)) in enumerate(zip(labels, places)):
        b = np.asarray(lb["bboxes"], dtype=np.float64).reshape(-1, 4)
        sq = np.stack(((b[:, 0] * w + left) / size, (b[:, 1] * h + top) / size, b[:, 2] * w / size,
                       b[:, 3] * h / size), 1)  # fmt: skip
        idx.append(np.full(len(b), i))
        cls.append(np.asarray(lb["cls"]).reshape(-1))
        boxes.append(sq)
    t = lambda a: torch.from_numpy(np.concatenate(a).astype(np.float32)).to(dev)  # noqa: E731
    return {"batch_idx": t(idx), "cls": t(cls).view(-1, 1), "bboxes": t(boxes).view(-1, 4)}

