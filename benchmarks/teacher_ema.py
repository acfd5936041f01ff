"""Which moving average of the student makes the best teacher on a short run: the measurement behind teacher_decay.

Trains the partial-label baseline (no teacher in the loop) and keeps, beside the student, several exponential moving
averages of it, all updated after every optimizer step exactly as Ultralytics updates its own EMA (ModelEMA, decay
`d * (1 - exp(-updates / tau))`). At the end of every epoch each candidate is validated on the complete val labels with
the trainer's own validator: the candidate that scores best is the best teacher (a teacher's boxes are only as good as
its detections). Candidates:

  student        the raw weights (what "teacher = student" gives: self-training without averaging)
  ultralytics    the trainer's EMA: 0.9999 with tau=2000, i.e. decay ~0.03 after the ~60 updates of a 5-epoch run
  ema D         a teacher EMA of decay D with a short ramp (tau=10 updates), from the first step
  ema D @eN     the same, started from the student at the first step of epoch N (as a teacher EMA begun at the end
                of a warm-up would be)

    python benchmarks/teacher_ema.py [--epochs 10] [--candidates "ema 0.9" "ema 0.99 @e3"] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from copy import deepcopy
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

DEFAULT_CANDIDATES = ("ema 0.9", "ema 0.99", "ema 0.999")
CANDIDATES: dict[str, tuple[float, int, int]] = {}  # name -> (decay, tau, first epoch, 1-based)


def parse(name: str) -> tuple[float, int, int]:
    """'ema 0.99' -> (0.99, 10, 1); 'ema 0.99 @e3' -> (0.99, 10, 3)."""
    parts = name.split()
    start = int(parts[2][2:]) if len(parts) > 2 else 1
    return float(parts[1]), 10, start


def make_trainer_class():
    from ultralytics.utils.torch_utils import ModelEMA, unwrap_model

    from yolo_partial.trainer import PartialDetectionTrainer

    class EMAProbeTrainer(PartialDetectionTrainer):
        """The baseline trainer, with extra EMAs updated after each optimizer step and validated each epoch."""

        probes: dict
        rows: list

        def optimizer_step(self):
            super().optimizer_step()
            if not hasattr(self, "probes"):
                self.probes, self.rows = {}, []
            for name, (d, tau, start) in CANDIDATES.items():
                if name not in self.probes and self.epoch + 1 >= start:
                    self.probes[name] = ModelEMA(self.model, decay=d, tau=tau)
            for ema in self.probes.values():
                ema.update(self.model)

        def validate(self):
            metrics, fitness = super().validate()  # the trainer's own EMA ('ultralytics')
            row = {"epoch": self.epoch + 1, "updates": self.ema.updates,
                   "ultralytics decay": round(self.ema.decay(self.ema.updates), 4),
                   "ultralytics": metrics["metrics/mAP50(B)"]}  # fmt: skip
            own = self.ema.ema
            try:
                student = deepcopy(unwrap_model(self.model)).eval()
                for name in ["student", *CANDIDATES]:
                    if name != "student" and name not in self.probes:
                        row[name] = float("nan")
                        continue
                    self.ema.ema = student if name == "student" else self.probes[name].ema
                    row[name] = self.validator(self)["metrics/mAP50(B)"]
            finally:
                self.ema.ema = own
            self.rows.append(row)
            print("EMA-PROBE", json.dumps(row), flush=True)
            return metrics, fitness

    return EMAProbeTrainer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/teacher_ema"))
    ap.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES))
    opt = ap.parse_args()
    CANDIDATES.update({c: parse(c) for c in opt.candidates})
    from ultralytics import YOLO

    t0 = time.time()
    cls = make_trainer_class()
    trainer_box = {}

    def grab(tr):
        trainer_box["t"] = tr

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_end", grab)
    model.train(trainer=cls, data=opt.data, imgsz=opt.imgsz, epochs=opt.epochs, batch=opt.batch, seed=opt.seed,
                workers=2, plots=False, project=str(opt.out.absolute()), name="run", exist_ok=True, device="cpu")
    rows = trainer_box["t"].rows
    names = ["student", "ultralytics", *CANDIDATES]
    lines = [f"# Teacher EMA probe on `{opt.data}` (yolov8n from scratch, imgsz {opt.imgsz}, batch {opt.batch}, "
             f"{opt.epochs} epochs, seed {opt.seed}; {(time.time() - t0) / 60:.1f} min)", "",
             "val mAP50 (%) of each candidate teacher at the end of each epoch", "",
             "| epoch | updates | ultralytics decay | " + " | ".join(names) + " |",
             "|---:|---:|---:|" + "---:|" * len(names)]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['epoch']} | {r['updates']} | {r['ultralytics decay']:.3f} | "
                     + " | ".join(f"{100 * r[n]:.1f}" for n in names) + " |")
    mean = {n: sum(r[n] for r in rows[len(rows) // 2:]) / max(len(rows) - len(rows) // 2, 1) for n in names}
    lines += ["", f"Command: `python benchmarks/teacher_ema.py --epochs {opt.epochs} --candidates "
              + " ".join(f'"{c}"' for c in opt.candidates) + "`"]
    lines += ["", "mean over the second half of the run: " + ", ".join(f"{n} {100 * v:.1f}" for n, v in mean.items())]
    opt.out.mkdir(parents=True, exist_ok=True)
    (opt.out / "teacher_ema.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
