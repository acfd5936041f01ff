"""Co-mining's pseudo-label threshold for TAL-trained scores: pseudo boxes per image and the share that are real
unlabelled objects, against cm_score, from a model trained at the accuracy benchmark's budget.

Ultralytics' task-aligned assigner trains class scores towards the IoU of the predicted box (targets are the alignment
metric, at most the IoU), so a TAL head's confident scores sit well below a focal-loss RetinaNet's, for which the
reference tuned tau = 0.6. This script applies Co-mining's own mining rule (score > tau, class-wise NMS at cm_nms,
no same-class GT overlap above cm_gt_iou: see yolo_partial.losses.comining.pseudo_labels) to a trained model's
predictions on the training images of a split with a hidden-box manifest, and counts, for each tau:
  pseudo_n      pseudo boxes per image
  pseudo_share  share of them matching a hidden box (same class, IoU >= 0.5): mined boxes that are real
  found         share of the hidden boxes that some pseudo box matches
The chosen default is the lowest tau at which at least half of the pseudo boxes are real (pseudo_share >= 0.5): a
false pseudo label teaches background as an object, a true one restores an object, so below that share mining does
more harm than good, and above it a lower tau finds more of the unlabelled objects. (F1 of share and found is printed
too; on TAL scores it only falls with tau, so it would pick the range's edge rather than a trade-off.)

Usage:
  python benchmarks/comining_threshold.py --model RUN/weights/best.pt --data SPLIT/data.yaml [--imgsz 160]
Writes benchmarks/results/comining_threshold.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
TAUS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def curve(model: str, data: str, imgsz: int, nms: float = 0.5, gt_iou: float = 0.4) -> list[dict]:
    """The three figures for every tau in TAUS (one prediction pass at the lowest tau)."""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywh2xyxy

    from yolo_partial.hidden import _labelled_boxes, find_manifest, load_manifest

    manifest = load_manifest(find_manifest(data))
    files = sorted(manifest.boxes)
    yolo = YOLO(model)
    n_hidden, per_image = 0, []
    for im_file, r in zip(files, yolo.predict(files, stream=True, conf=min(TAUS), iou=nms, imgsz=imgsz, verbose=False,
                                              max_det=300)):
        b = r.boxes
        pred = torch.cat((b.cls[:, None], b.xywhn, b.conf[:, None]), 1).cpu()
        gt = torch.as_tensor(_labelled_boxes(im_file))
        if len(gt) and len(pred):  # Co-mining drops boxes overlapping a same-class GT above gt_iou
            over = (box_iou(xywh2xyxy(pred[:, 1:5]), xywh2xyxy(gt[:, 1:5]), eps=1e-12) > gt_iou) & (pred[:, :1] == gt[:, 0])
            pred = pred[~over.any(1)]
        hidden = torch.as_tensor(manifest.for_image(im_file))
        n_hidden += len(hidden)
        match = torch.zeros(len(pred), len(hidden), dtype=torch.bool)
        if len(hidden) and len(pred):
            match = (box_iou(xywh2xyxy(pred[:, 1:5]), xywh2xyxy(hidden[:, 1:5]), eps=1e-12) >= 0.5) & (
                pred[:, :1] == hidden[:, 0])
        per_image.append((pred[:, 5].numpy(), match.numpy()))
    out = []
    for tau in TAUS:
        n = hits = found = 0
        for scores, match in per_image:
            keep = scores > tau
            n += int(keep.sum())
            hits += int(match[keep].any(1).sum())
            found += int(match[keep].any(0).sum()) if match.shape[1] else 0
        share = hits / n if n else float("nan")
        recall = found / n_hidden if n_hidden else float("nan")
        f1 = 2 * share * recall / (share + recall) if n and (share + recall) > 0 else 0.0
        out.append({"cm_score": tau, "pseudo_n": n / len(files), "pseudo_share": share, "found": recall, "f1": f1})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    a = p.parse_args(argv)
    rows = curve(a.model, a.data, a.imgsz)
    best = min((r for r in rows if r["pseudo_share"] >= 0.5), key=lambda r: r["cm_score"], default=rows[-1])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "comining_threshold.json").write_text(json.dumps({"model": a.model, "data": a.data, "rows": rows,
                                                              "chosen": best["cm_score"]}, indent=1))
    table = "\n".join(f"| {r['cm_score']:.2f} | {r['pseudo_n']:.2f} | {100 * r['pseudo_share']:.1f} | "
                      f"{100 * r['found']:.1f} | {r['f1']:.3f} |" for r in rows)
    base = json.loads(Path(a.model).parents[2].joinpath(f"{Path(a.model).parents[1].name}.json").read_text()) \
        if Path(a.model).parents[2].joinpath(f"{Path(a.model).parents[1].name}.json").is_file() else {}
    text = (f"# Co-mining threshold on TAL scores\n\nCommand: `python benchmarks/comining_threshold.py --model {a.model} "
            f"--data {a.data} --imgsz {a.imgsz}`\n\nCo-mining's mining rule (class-wise NMS 0.5, same-class GT IoU > 0.4 "
            f"dropped) on the training images with hidden boxes; pseudo_share = pseudo boxes matching a hidden box "
            f"(percent), found = hidden boxes matched (percent).\n\n| cm_score | pseudo_n / image | pseudo_share | found | "
            f"F1 |\n|---|---|---|---|---|\n{table}\n\nModel: {base.get('row', 'the given checkpoint')} "
            f"(val mAP50 {base.get('val mAP50', float('nan')):.1f}), the accuracy benchmark's budget. Chosen: cm_score = "
            f"{best['cm_score']}, the lowest threshold at which at least half of the pseudo boxes are real. SPEC's 0.6 "
            f"(tuned on RetinaNet's focal scores) mines "
            f"{next(r['pseudo_n'] for r in rows if r['cm_score'] == 0.6):.2f} boxes per image here and finds "
            f"{100 * next(r['found'] for r in rows if r['cm_score'] == 0.6):.1f} % of the hidden ones.\n\n![curve](comining_threshold.png)\n")
    (a.out / "comining_threshold.md").write_text(text)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), tight_layout=True)
    x = [r["cm_score"] for r in rows]
    ax.plot(x, [100 * r["pseudo_share"] for r in rows], "-o", label="pseudo_share (%)")
    ax.plot(x, [100 * r["found"] for r in rows], "-o", label="hidden found (%)")
    ax2 = ax.twinx()
    ax2.plot(x, [r["pseudo_n"] for r in rows], "--", color="gray", label="pseudo_n / image")
    ax.axvline(best["cm_score"], color="k", lw=0.5)
    ax.set(xlabel="cm_score", ylabel="percent")
    ax2.set_ylabel("pseudo boxes per image")
    ax.legend(fontsize=8, loc="upper center")
    fig.savefig(a.out / "comining_threshold.png", dpi=150)
    plt.close(fig)
    print(text)


if __name__ == "__main__":
    main()
