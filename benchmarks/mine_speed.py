"""Speed of `yolo-partial mine` against plain Ultralytics prediction on the same images, model and imgsz (issue #16).

Both sides run end to end in this process, model loading included: `mine` with its defaults on a list of the embedded
dataset's training images (predictions down to the score floor, matching against labels and the hidden-box
manifest, calibration, and writing every output: CVAT XML, COCO JSON, YOLO files, CSVs, review.html/png, pr.png),
and `YOLO(model).predict(stream=True)` over the same list with the same batch and imgsz, its results consumed and
nothing saved, once at mine's score floor (the same inference work) and once at predict's default conf 0.25. After a
warm-up pass, the three are timed in turn `--repeats` times and the best of each is kept. Target: mine >= 0.9x the
images/s of predict at the same score floor.

Without --model two scenarios run, both a from-scratch yolov8n saved untrained: "quiet" as initialised (a few
boxes per image above the floor, none above 0.25: mine's fixed costs), and "busy" with its class biases zeroed, so
that every anchor scores about 0.5 and each image keeps all NMS survivors (about 140 at 160 px) even at 0.25: mine
then matches, draws and writes far more than a trained model makes it (nearly every box a candidate).

    python benchmarks/mine_speed.py [--images 800] [--imgsz 160] [--batch 16] [--repeats 2] [--model best.pt]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(tmp: Path, n: int) -> tuple[Path, Path]:
    """A data YAML whose train split lists the first n training images of the embedded dataset -> (YAML, list)."""
    from yolo_partial.shapes import CLASS_NAMES, ensure_shapes

    partial = ensure_shapes("partial")
    root = partial.parent / "partial"
    images = sorted((root / "images" / "train").glob("*.jpg"))[:n]
    listing = tmp / "images.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASS_NAMES))
    data = tmp / "data.yaml"
    data.write_text(f"path: {root}\ntrain: {listing}\nval: {listing}\nhidden: ../hidden.json\nnames:\n{names}")
    return data, listing


def untrained_model(tmp: Path, busy: bool) -> Path:
    """A from-scratch yolov8n (6 classes) saved as a checkpoint, as a training run would leave it.

    busy=True zeroes the class biases: every anchor then scores about 0.5, so every NMS survivor is above predict's
    default conf too and mine exports, draws and writes a box almost everywhere.
    """
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    yolo = YOLO("yolov8n.yaml")
    yolo.model = DetectionModel("yolov8n.yaml", nc=6, verbose=False)
    if busy:
        with torch.no_grad():
            for branch in yolo.model.model[-1].cv3:
                branch[-1].bias.zero_()
    yolo.model.args = {"imgsz": 160, "task": "detect"}
    yolo.model.names = {i: str(i) for i in range(6)}
    path = tmp / f"untrained{'-busy' if busy else ''}.pt"
    yolo.save(path)
    return path


def time_predict(model: Path, listing: Path, imgsz: int, batch: int, conf: float) -> tuple[float, int]:
    """Seconds for YOLO(model).predict over the list, results consumed (model load included) -> (s, boxes)."""
    from ultralytics import YOLO

    t = time.perf_counter()
    boxes = sum(len(r.boxes) for r in YOLO(str(model)).predict(str(listing), stream=True, imgsz=imgsz, batch=batch,
                                                               conf=conf, verbose=False, save=False))
    return time.perf_counter() - t, boxes


def time_mine(model: Path, data: Path, out: Path, imgsz: int, batch: int) -> tuple[float, dict]:
    """Seconds for a whole `mine` run with its defaults -> (s, its mine.json)."""
    import json

    from yolo_partial.mine import run_mine

    t = time.perf_counter()
    run_mine({"model": str(model), "data": str(data), "out": str(out), "imgsz": imgsz, "batch": batch})
    return time.perf_counter() - t, json.loads((out / "mine.json").read_text())


def measure(model: Path, data: Path, listing: Path, tmp: Path, a) -> tuple[dict, dict, dict]:
    """Warm up, then time mine and predict (floor, default) in turn; best seconds, mine.json, boxes per predict run."""
    from yolo_partial.mine import SCORE_FLOOR

    time_predict(model, listing, a.imgsz, a.batch, SCORE_FLOOR)  # warm-up: page cache, torch kernels, imports
    best, record, boxes = {"mine": 1e9, "floor": 1e9, "default": 1e9}, {}, {}
    for _ in range(a.repeats):
        s, boxes["floor"] = time_predict(model, listing, a.imgsz, a.batch, SCORE_FLOOR)
        best["floor"] = min(best["floor"], s)
        s, record = time_mine(model, data, tmp / "mined", a.imgsz, a.batch)
        best["mine"] = min(best["mine"], s)
        s, boxes["default"] = time_predict(model, listing, a.imgsz, a.batch, 0.25)
        best["default"] = min(best["default"], s)
    return best, record, boxes


def report(name: str, n: int, best: dict, record: dict, boxes: dict) -> None:
    """Print one scenario's table in markdown."""
    from yolo_partial.mine import SCORE_FLOOR

    rate = {k: n / v for k, v in best.items()}
    print(f"\n{name}: mine exported {record['candidates']} candidates at score >= {record['conf']:.3g} "
          f"({record['conf_from']}); predictions per image at the floor {boxes['floor'] / n:.0f}, at conf 0.25 "
          f"{boxes['default'] / n:.0f}")
    print("| run | seconds | images/s | mine / this |")
    print("|---|---:|---:|---:|")
    for key, label in (("mine", "yolo-partial mine (defaults, all outputs)"),
                       ("floor", f"YOLO.predict conf={SCORE_FLOOR} (mine's floor)"),
                       ("default", "YOLO.predict conf=0.25 (predict's default)")):
        print(f"| {label} | {best[key]:.2f} | {rate[key]:.1f} | {rate['mine'] / rate[key]:.2f}x |")
    print(f"{name}: mine / predict at the same floor = {rate['mine'] / rate['floor']:.2f}x (target >= 0.9x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", type=Path, default=None, help="a checkpoint (default: the two untrained scenarios)")
    a = ap.parse_args()

    import torch
    import ultralytics
    from ultralytics.utils import LOGGER

    print(f"mine_speed: {a.images} images of the embedded dataset, imgsz {a.imgsz}, batch {a.batch}, best of "
          f"{a.repeats}; torch {torch.__version__}, ultralytics {ultralytics.__version__}, {os.cpu_count()} cpus, "
          f"{platform.processor() or platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="mine-speed-") as d:
        tmp = Path(d)
        data, listing = make_data(tmp, a.images)
        LOGGER.setLevel("WARNING")  # mine's summary lines would interleave with the tables
        scenarios = ({str(a.model): a.model} if a.model else
                     {"quiet (untrained yolov8n)": untrained_model(tmp, False),
                      "busy (untrained yolov8n, class biases 0: boxes everywhere)": untrained_model(tmp, True)})
        for name, model in scenarios.items():
            report(name, a.images, *measure(model, data, listing, tmp, a))


if __name__ == "__main__":
    main()
