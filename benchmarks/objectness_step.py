"""Training-step time of the YOLOv5 objectness model (yolov5n-obj) against yolov8n.

One step = forward + loss + backward from scratch on a fixed synthetic batch (loss_overhead.make_batch). The models are
interleaved round-robin in one process so drift hits all alike; medians over repeats are reported, with the ratio to
the first setting. yolov8n uses Ultralytics' own loss; the objectness model uses yolo-partial's YOLOv5 loss, with the
method keys off and with both BPR drops on.

    python benchmarks/objectness_step.py [--imgsz 320] [--batch 8] [--repeats 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch
from loss_overhead import make_batch, step  # same folder: the shared synthetic batch and step
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG_DICT

from yolo_partial.keys import METHOD_DEFAULTS
from yolo_partial.losses import partial_criterion
from yolo_partial.models import resolve_model

SETTINGS = {  # name: (model YAML, method keys; None = Ultralytics' own criterion)
    "yolov8n (stock loss)": ("yolov8n.yaml", None),
    "yolov5n-obj": ("yolov5n-obj.yaml", {}),
    "yolov5n-obj bpr_both": ("yolov5n-obj.yaml", {"drop_neg_box": 0.25, "drop_neg_obj": 0.75}),
}


def build(yaml: str, keys: dict | None, imgsz: int, device: torch.device):
    """A from-scratch 10-class model in training mode and its criterion."""
    model = DetectionModel(resolve_model(yaml), nc=10, verbose=False).to(device).train()
    model.args = SimpleNamespace(**{**DEFAULT_CFG_DICT, **METHOD_DEFAULTS, **(keys or {}), "imgsz": imgsz})
    return model, (model.init_criterion() if keys is None else partial_criterion(model))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--objects", type=int, default=8, help="GT boxes per image")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    opt = ap.parse_args()

    torch.manual_seed(0)
    dev = torch.device(opt.device)
    batch = {k: v.to(dev) for k, v in make_batch(opt.batch, opt.imgsz, opt.objects, 10).items()}
    runs = {name: build(yaml, keys, opt.imgsz, dev) for name, (yaml, keys) in SETTINGS.items()}
    times = {name: [] for name in runs}
    for r in range(opt.warmup + opt.repeats):
        for name, (model, crit) in runs.items():
            t0 = time.perf_counter()
            step(model, crit, batch)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if r >= opt.warmup:
                times[name].append(time.perf_counter() - t0)

    ref = statistics.median(times[next(iter(runs))])
    print(f"\nimgsz={opt.imgsz} batch={opt.batch} objects/img={opt.objects} device={opt.device} "
          f"torch threads={torch.get_num_threads()} repeats={opt.repeats} (medians; ratio to row 1)")  # fmt: skip
    print("| model | params | step ms | ratio |")
    print("|---|---:|---:|---:|")
    for name, (model, _) in runs.items():
        t = statistics.median(times[name])
        params = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {params / 1e6:.2f}M | {t * 1e3:.0f} | {t / ref:.3f} |")


if __name__ == "__main__":
    main()
