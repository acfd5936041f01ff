"""Where a model's unlabelled detections land on a partial split's training images: the evidence for `teacher_classes`.

A teacher mines the detections that match no label of their class. This script sorts those of a trained model (score
>= --conf, class-wise NMS at the teacher's default `teacher_nms`, the ones overlapping a same-class label above its
default `teacher_gt_iou` (0.4) left out as the teacher leaves them out) by what lies under them, using the split's
hidden-box manifest:

  hidden, right class     a hidden box of the same class (IoU >= 0.5, the teacher's CAL_IOU): what mining is for
  labelled, other class   overlaps a *labelled* box of another class (IoU > 0.4): a class confusion on a known object
  hidden, other class     a hidden box of another class (IoU >= 0.5): a real object, the wrong class
  near an object          overlaps some labelled or hidden box (IoU > 0.1), none of the above: a badly placed box
  nothing                 no box anywhere near

Usage:
  python benchmarks/teacher_confusions.py MODEL.pt [MODEL.pt ...] --data runs/.../shapes-hard-s0/data.yaml \
      [--conf 0.3] [--images 400] [--imgsz 160] [--out benchmarks/results/teacher_confusions.md]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

from yolo_partial.keys import METHOD_DEFAULTS  # noqa: E402
from yolo_partial.losses.teacher import CAL_IOU as HIT_IOU  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KINDS = ("hidden, right class", "labelled, other class", "hidden, other class", "near an object", "nothing")
GT_IOU, NMS_IOU, NEAR_IOU = METHOD_DEFAULTS["teacher_gt_iou"], METHOD_DEFAULTS["teacher_nms"], 0.1


def kind(iou_lab, cls_lab, iou_hid, cls_hid, c) -> str | None:
    """The KINDS entry of one detection of class c, from its IoU with the image's labelled and hidden boxes (None:
    it overlaps a label of its class, so the teacher skips it)."""
    if ((iou_lab > GT_IOU) & (cls_lab == c)).any():
        return None
    if ((iou_hid >= HIT_IOU) & (cls_hid == c)).any():
        return KINDS[0]
    if (iou_lab > GT_IOU).any():
        return KINDS[1]
    if (iou_hid >= HIT_IOU).any():
        return KINDS[2]
    if (iou_lab > NEAR_IOU).any() or (iou_hid > NEAR_IOU).any():
        return KINDS[3]
    return KINDS[4]


def census(model: str, data: str, conf: float, n_images: int, imgsz: int) -> dict[str, int]:
    """Counts of KINDS over the first `n_images` training images (sorted) of the split's hidden manifest."""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywh2xyxy

    from yolo_partial.hidden import _labelled_boxes, find_manifest, load_manifest

    manifest = load_manifest(find_manifest(data))
    files = sorted(manifest.boxes)[:n_images]
    counts = dict.fromkeys(KINDS, 0)
    for im_file, r in zip(files, YOLO(model).predict(files, stream=True, conf=conf, iou=NMS_IOU, imgsz=imgsz,
                                                     verbose=False)):  # fmt: skip
        pred = xywh2xyxy(r.boxes.xywhn.cpu())
        lab = torch.as_tensor(_labelled_boxes(im_file)).view(-1, 5)
        hid = torch.as_tensor(manifest.for_image(im_file)).view(-1, 5)
        iou_l = box_iou(pred, xywh2xyxy(lab[:, 1:]))
        iou_h = box_iou(pred, xywh2xyxy(hid[:, 1:]))
        for i, c in enumerate(r.boxes.cls.cpu()):
            k = kind(iou_l[i], lab[:, 0], iou_h[i], hid[:, 0], c)
            if k is not None:
                counts[k] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--data", required=True, help="a split's data YAML (its hidden: manifest is read)")
    p.add_argument("--conf", type=float, default=0.3)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "teacher_confusions.md")
    a = p.parse_args(argv)
    lines = ["# Where a model's unlabelled detections land (`benchmarks/teacher_confusions.py`)", "",
             f"Data `{Path(a.data).parent.name}`, the first {a.images} training images, detections scoring >= "
             f"{a.conf} that overlap no label of their class (IoU > {GT_IOU}); count (share).", "",
             "| model | boxes | " + " | ".join(KINDS) + " |", "|---|---:|" + "---:|" * len(KINDS)]
    for m in a.models:
        c = census(m, a.data, a.conf, a.images, a.imgsz)
        n = sum(c.values())
        cells = " | ".join(f"{c[k]} ({100 * c[k] / max(n, 1):.0f} %)" for k in KINDS)
        lines.append(f"| {Path(m).parents[1].name} | {n} | {cells} |")
        print(lines[-1], flush=True)
    from yolo_partial.fileio import write_text_atomic

    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(a.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
