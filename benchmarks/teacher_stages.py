"""How many pseudo positives each of the teacher's rules lets through, on a trained model: the evidence for
`teacher_unmatched` on sparse splits.

The teacher's mining (yolo_partial/losses/teacher.py) is replayed on a split's training images with a trained
model as teacher and the thresholds its checkpoint saved: class-wise NMS, the class rule (`teacher_classes` any /
one / sure), then the per-batch bound on invented boxes (`demote_invented`) at several values of `teacher_unmatched`.
For each stage: pseudo positives per image, and the share of them that take a hidden box (same class, IoU >= the
teacher's CAL_IOU), from the split's hidden manifest. The images are the training images as they are (no mosaic),
in batches of --batch, as training batches them.

On data with a `partial:` file (a merge), the teacher drops the boxes of a class an image asserts (labels exhaustively
or verifies absent) after its rules, as training does (`after`); `before` drops them from the detections before the
class rule, so that a box of an asserted class, known to be wrong where no label of it lies, neither wins an object's
class-agnostic NMS (`one`) nor leaves the object undecided (`sure`).

Usage:
  python benchmarks/teacher_stages.py RUN/weights/last.pt --data <work>/data/shapes-extreme-s0/data.yaml \
      [--images 400] [--batch 16] [--unmatched 2 5 1000] [--tau-hi T] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch  # noqa: E402

from yolo_partial.keys import METHOD_DEFAULTS  # noqa: E402
from yolo_partial.losses import teacher as T  # noqa: E402

CLASSES = ("any", "one", "sure")


def batches(data: str, n_images: int, batch: int, imgsz: int, shuffle: int | None = None):
    """The split's first n_images training images as Ultralytics batches: img (B, 3, H, W) in [0, 1], batch_idx,
    cls, bboxes (normalised xywh), im_file. Sorted, or in a random order seeded by `shuffle`: a merge's sources sit in
    separate folders, and the bound on invented boxes needs each class's labels in a batch, as training mixes them."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(data)
    cfg = get_cfg(overrides={"imgsz": imgsz, "fraction": 1.0})
    ds = build_yolo_dataset(cfg, info["train"], batch, info, mode="val", stride=32)
    order = list(range(len(ds.im_files)))
    if shuffle is not None:
        order = torch.randperm(len(order), generator=torch.Generator().manual_seed(shuffle)).tolist()
    ds.im_files, ds.labels = [ds.im_files[i] for i in order[:n_images]], [ds.labels[i] for i in order[:n_images]]
    ds.ni = len(ds.labels)
    for b in build_dataloader(ds, batch, workers=0, shuffle=False):
        b["img"] = b["img"].float() / 255
        yield b


def with_hidden(batch: dict, manifest) -> dict:
    """The batch with its images' hidden boxes in the keys the trainer gives them (hidden_batch_idx (n,), hidden_cls
    (n, 1), hidden_bboxes (n, 4) normalised xywh), so the teacher's own `hidden_counts` scores the positives."""
    rows = [[i, *box] for i, f in enumerate(batch["im_file"]) for box in manifest.for_image(f)]
    t = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
    batch["hidden_batch_idx"], batch["hidden_cls"], batch["hidden_bboxes"] = t[:, 0], t[:, 1:2], t[:, 2:]
    return batch


def asserted_classes(lists, im_files: list[str], nc: int) -> torch.Tensor:
    """(B, C) bool: the classes whose teacher boxes training drops in each image, its lists' explicit classes (as
    `class_partial.drop_asserted` reads them from the tiles); a merge has no ignore regions, and without mosaic an
    image's lists hold at every point of it."""
    out = torch.zeros(len(im_files), nc, dtype=torch.bool)
    for i, f in enumerate(im_files):
        entry = lists.for_image(f)
        if entry is not None:  # an image without an entry names no class explicitly
            out[i] = torch.from_numpy(entry.explicit(nc))
    return out


def stages(model_path: str, data: str, n_images: int, batch: int, imgsz: int, unmatched: list[float],
           tau: float | None = None, shuffle: int | None = None) -> dict:
    """{stage: (pseudo positives, of them on a hidden box)} summed over the images, and the image count; `tau` sets
    every class's tau_hi (else the checkpoint's)."""
    from ultralytics import YOLO

    from yolo_partial.hidden import find_manifest, load_manifest
    from yolo_partial.losses.method import CHECKPOINT_KEY
    from yolo_partial.partial_labels import load_for_data

    ckpt = torch.load(model_path, map_location="cpu", weights_only=False)
    state = ckpt[CHECKPOINT_KEY]["teacher"]
    tau_hi, tau_lo = torch.tensor(state["tau_hi"]), torch.tensor(state["tau_lo"])
    if tau is not None:
        tau_hi = torch.full_like(tau_hi, tau)
        tau_lo = torch.minimum(tau_lo, tau_hi)
    model = YOLO(model_path).model.float().eval()
    manifest = load_manifest(find_manifest(data))
    lists = load_for_data(data)
    nms, gt_iou = METHOD_DEFAULTS["teacher_nms"], METHOD_DEFAULTS["teacher_gt_iou"]
    out, n_img, n_hidden = {}, 0, 0
    for b in batches(data, n_images, batch, imgsz, shuffle):
        b = with_hidden(b, manifest)
        img = b["img"]
        hw = img.shape[2:]
        boxes, scores = T.teacher_predictions(model, img)
        dets = T.detections(boxes, scores, T.LO_MIN, nms)
        n_img += len(img)
        n_hidden += len(b["hidden_cls"])
        asserted = asserted_classes(lists, b["im_file"], scores.shape[-1]) if lists else None
        for rule in CLASSES:
            for when in ("after", "before") if lists else ("",):
                use = dets if when != "before" else [d[~a[d[:, 5].long()]] for d, a in zip(dets, asserted)]
                mined = T.split_boxes(boxes, scores, b, hw, tau_hi, tau_lo, nms, gt_iou, dets=use, classes=rule)
                found = {"no bound": mined}
                for u in unmatched:
                    found[f"teacher_unmatched={u:g}"] = T.demote_invented(mined, dets, b, hw, tau_hi, u)
                for k, m in found.items():
                    if asserted is not None:  # what training does last: no positive of an asserted class
                        m = T.Mined(m.pos[~asserted[m.pos[:, 0].long(), m.pos[:, 1].long()]], m.unc)
                    k = f"{rule}, {k}" + (f", class lists {when}" if when else "")
                    p, h = out.get(k, (0, 0))
                    out[k] = (p + len(m.pos), h + int(T.hidden_counts(m, b, 1)[0]))  # n_img=1: totals
    return {"stages": out, "images": n_img, "tau_hi": tau_hi.tolist(), "hidden": n_hidden}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--data", required=True, help="a split's data YAML (its hidden: manifest is read)")
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--unmatched", type=float, nargs="+", default=[2.0, 5.0, 1000.0])
    p.add_argument("--tau-hi", type=float, help="every class's tau_hi (default: the checkpoint's calibrated ones)")
    p.add_argument("--shuffle", type=int, metavar="SEED", help="draw the images in a seeded random order (default: "
                   "sorted, the first --images)")
    p.add_argument("--out", type=Path, help="also write the table here (benchmarks/results/teacher_stages.md "
                   "gathers four such tables with a reading)")
    a = p.parse_args(argv)
    r = stages(a.model, a.data, a.images, a.batch, a.imgsz, a.unmatched, a.tau_hi, a.shuffle)
    n = r["images"]
    lines = ["# Pseudo positives by the teacher's rules (`benchmarks/teacher_stages.py`)\n",
             f"Model `{Path(a.model).parents[1].name}` as teacher, tau_hi "
             f"{'set to' if a.tau_hi is not None else 'from its checkpoint:'} "
             f"({', '.join(f'{t:.2f}' for t in r['tau_hi'])}); data `{Path(a.data).parent.name}`, {n} training images "
             f"without mosaic{'' if a.shuffle is None else f' in a random order (seed {a.shuffle})'}, "
             f"batches of {a.batch}; {r['hidden'] / max(n, 1):.2f} hidden boxes per image. "
             f"Default `teacher_unmatched` = {METHOD_DEFAULTS['teacher_unmatched']:g}.\n",
             "| rule, bound | pseudo positives per image | share on a hidden box of their class |",
             "|---|---:|---:|"]
    for k, (pos, hit) in r["stages"].items():
        lines.append(f"| {k} | {pos / n:.3f} | {hit / pos:.0%} |" if pos else f"| {k} | 0 | – |")
    if a.out:
        from yolo_partial.fileio import write_text_atomic

        write_text_atomic(a.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
