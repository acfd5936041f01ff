"""Partial-aware (federated) mAP on Ultralytics' own matching and AP code.

Two rules on top of Ultralytics' validation, both off for an image without partial information, so that a dataset
without a `partial:` file gets exactly Ultralytics' mAP (same matcher, same `ap_per_class`, same inputs):

1. **Federated classes** (LVIS' rule). An image with `labeled_classes` is evaluated for the classes it labels or
   verifies negative. A detection of any other class is neither a hit nor a false alarm: it is ignored, except that
   one matching a ground-truth box still counts as a hit. Every ground-truth box counts. (This is exactly LVIS' eval:
   detections of classes outside the image's positive and negative sets are dropped, and such classes have no boxes
   there; for a not-exhaustive class, which does have boxes, unmatched detections are ignored and matched ones kept.)
2. **Ignore boxes** (COCO's crowd rule). At each IoU threshold t, a detection that matches no ground-truth box and
   whose intersection with an ignore box, over the detection's own area, is >= t is ignored (neither hit nor false
   alarm); ground-truth boxes are matched first, so a real object inside a crowd region is still found. At mAP50's
   threshold this is "IoA >= 0.5"; pycocotools applies the same t per threshold, which this follows exactly.

Matching is `BaseValidator.match_predictions` at the validator's 10 thresholds (0.5:0.95) on `box_iou`, per image in
descending score order; AP is `ultralytics.utils.metrics.ap_per_class` on the detections counted at each threshold.
A detection ignored at some thresholds only is left out of those thresholds' precision-recall curves, as in COCO.

    stats = [image_stats(pb, ps, pc, gb, gc, partials.for_image(f), shape) for ...]
    result = federated_map(stats)        # or partial_map([(pb, ps, pc, gb, gc, partial, shape), ...])
    result["map50"], result["map"], result["per_class"]
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .partial_labels import ImagePartial

IOUV = torch.linspace(0.5, 0.95, 10)  # DetectionValidator.iouv: mAP@0.5:0.95
_MATCHER = SimpleNamespace(iouv=IOUV)  # match_predictions reads only self.iouv


def image_stats(pred_boxes, pred_scores, pred_cls, gt_boxes, gt_cls, partial: ImagePartial | None = None,
                shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Match one image's detections to its ground truth and decide which of them count, per IoU threshold.

    Args:
        pred_boxes: (N, 4) detections, xyxy.
        pred_scores: (N,) confidences.
        pred_cls: (N,) class ids.
        gt_boxes: (M, 4) ground-truth boxes, xyxy in the same frame as pred_boxes.
        gt_cls: (M,) class ids.
        partial: the image's entry of the `partial:` file, or None (fully labelled).
        shape: (h, w) of the frame the boxes are in, in pixels; None when they are normalised to [0, 1]. Used to
            place the ignore boxes (normalised xywh) in that frame.

    Returns:
        (dict): in descending score order, 'tp' (N, 10) bool hits, 'counted' (N, 10) bool (False: ignored at that
            threshold), 'conf' (N,), 'pred_cls' (N,); and 'target_cls' (M,).
    """
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import box_iou

    pred_boxes, gt_boxes = np.asarray(pred_boxes).reshape(-1, 4), np.asarray(gt_boxes).reshape(-1, 4)
    pred_scores, pred_cls, gt_cls = np.asarray(pred_scores).reshape(-1), np.asarray(pred_cls).reshape(-1), \
        np.asarray(gt_cls).reshape(-1)
    order = np.argsort(-pred_scores, kind="stable")  # the matcher is greedy in score order, as after NMS
    pred_boxes, pred_scores, pred_cls = pred_boxes[order], pred_scores[order], pred_cls[order]
    n = len(pred_cls)
    tp = np.zeros((n, len(IOUV)), bool)
    if n and len(gt_cls):
        iou = box_iou(torch.as_tensor(gt_boxes), torch.as_tensor(pred_boxes))  # (M, N)
        tp = BaseValidator.match_predictions(_MATCHER, torch.as_tensor(pred_cls), torch.as_tensor(gt_cls), iou).numpy()
    counted = np.ones_like(tp)
    if partial is not None and n:
        counted &= federated(pred_cls, tp, partial) & ~ignored(pred_boxes, tp, partial, shape)
    return {"tp": tp, "counted": counted, "conf": pred_scores, "pred_cls": pred_cls, "target_cls": gt_cls}


def federated(pred_cls: np.ndarray, tp: np.ndarray, partial: ImagePartial) -> np.ndarray:
    """(N, T) bool: detections the class lists let count, i.e. of an asserted class, or hits of any class."""
    if partial.labeled is None:
        return np.ones_like(tp)
    asserted = np.isin(pred_cls, sorted(partial.labeled | partial.negative))
    return asserted[:, None] | tp


def ignored(pred_boxes: np.ndarray, tp: np.ndarray, partial: ImagePartial, shape: tuple[int, int] | None) -> np.ndarray:
    """(N, T) bool: COCO's crowd rule, unmatched detections with IoA >= t in an ignore box, at each threshold t."""
    if not len(partial.ignore):
        return np.zeros_like(tp)
    from ultralytics.utils.metrics import bbox_ioa
    from ultralytics.utils.ops import xywh2xyxy

    regions = xywh2xyxy(partial.ignore.astype(np.float64))
    if shape is not None:
        regions *= np.array([shape[1], shape[0], shape[1], shape[0]], np.float64)
    # eps far below bbox_ioa's default: normalised areas of small detections are near 1e-5
    ioa = bbox_ioa(regions, pred_boxes.astype(np.float64), eps=1e-12).max(0)  # (N,) best over ignore boxes
    return ~tp & (ioa[:, None] >= IOUV.numpy()[None])


def federated_map(stats: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """mAP from per-image `image_stats`, with Ultralytics' `ap_per_class` on the detections counted per threshold.

    Returns:
        (dict): 'map50', 'map' (mAP50-95), 'mp', 'mr' (mean precision and recall at the max-F1 confidence, IoU 0.5),
            'ap_class_index' (K,) classes with ground truth, 'ap' (K, 10), 'per_class' {class: {'ap50', 'ap'}},
            'ignored' (detections not counted at IoU 0.5), 'detections' and 'targets'.
    """
    from ultralytics.utils.metrics import ap_per_class

    stats = list(stats)
    cat = {k: np.concatenate([s[k] for s in stats]) if stats else np.zeros(0) for k in
           ("conf", "pred_cls", "target_cls")}
    tp = np.concatenate([s["tp"] for s in stats]) if stats else np.zeros((0, len(IOUV)), bool)
    counted = np.concatenate([s["counted"] for s in stats]) if stats else np.ones_like(tp)
    # thresholds whose counted detections agree share one ap_per_class call: without partial info that is one call
    # on exactly the validator's arrays, so the result is Ultralytics' own
    groups: dict[bytes, list[int]] = {}
    for t in range(tp.shape[1]):
        groups.setdefault(counted[:, t].tobytes(), []).append(t)
    classes = np.unique(cat["target_cls"]).astype(int)
    ap, mp, mr = np.zeros((len(classes), tp.shape[1])), 0.0, 0.0
    for ts in groups.values():
        keep = counted[:, ts[0]]
        result = ap_per_class(tp[keep][:, ts], cat["conf"][keep], cat["pred_cls"][keep], cat["target_cls"])
        ap[:, ts] = result[5]
        if ts[0] == 0:
            p, r = result[2], result[3]
            mp, mr = (float(p.mean()), float(r.mean())) if len(p) else (0.0, 0.0)
    return {
        "map50": float(ap[:, 0].mean()) if len(ap) else 0.0,
        "map": float(ap.mean()) if len(ap) else 0.0,
        "mp": mp,
        "mr": mr,
        "ap_class_index": classes,
        "ap": ap,
        "per_class": {int(c): {"ap50": float(a[0]), "ap": float(a.mean())} for c, a in zip(classes, ap)},
        "ignored": int((~counted[:, 0]).sum()) if len(counted) else 0,
        "detections": len(tp),
        "targets": len(cat["target_cls"]),
    }


def partial_map(images: Iterable[Sequence]) -> dict[str, Any]:
    """Partial-aware mAP of a dataset -> `federated_map`'s dict.

    Args:
        images: per image (pred_boxes, pred_scores, pred_cls, gt_boxes, gt_cls, ImagePartial | None[, (h, w)]),
            as `image_stats` takes them; the optional shape places ignore boxes in pixel frames.
    """
    return federated_map(image_stats(*im) for im in images)
