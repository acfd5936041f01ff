"""Speed and memory of `yolo-partial split` on a generated dataset of many label files (issue #3).

Generates N label files with a COCO-like box count distribution (negative binomial, mean 7.3 boxes, long tail, some
empty images; 80 classes with Zipf-like frequencies) beside zero-byte placeholder .jpg files (split only links
images, it never reads them), then times split_dataset for each mode in a fresh subprocess and reports files/s and
the subprocess's peak resident memory, also as growth over its resident memory after the imports. Split creates two
directory entries per image (a link and a label file), so before each mode it also measures how fast a bare Python
loop creates those on the same filesystem: on a slow disk that, not split, sets the pace.

    python benchmarks/split_speed.py [--files 100000] [--modes hard miss50] [--dir /tmp/split-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

MEAN_BOXES, DISPERSION, N_CLASSES, MAX_BOXES = 7.3, 1.2, 80, 100


def generate(root: Path, n: int, seed: int = 0) -> tuple[Path, int]:
    """Write root/images/train/*.jpg (empty), root/labels/train/*.txt and root/data.yaml -> (YAML path, box count)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = np.minimum(rng.negative_binomial(DISPERSION, DISPERSION / (DISPERSION + MEAN_BOXES), n), MAX_BOXES)
    freq = 1 / np.arange(1, N_CLASSES + 1)
    classes = rng.choice(N_CLASSES, int(counts.sum()), p=freq / freq.sum())
    xywh = rng.uniform(0.01, 0.5, (len(classes), 4))
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    (root / "images" / "val" / "v.jpg").touch()
    start = 0
    for i, k in enumerate(counts):
        stem = f"{i:07d}"
        (root / "images" / "train" / f"{stem}.jpg").touch()
        rows = (f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, (x, y, w, h) in
                zip(classes[start:start + k], xywh[start:start + k]))
        (root / "labels" / "train" / f"{stem}.txt").write_text("".join(rows))
        start += k
    names = "".join(f"  {c}: class{c}\n" for c in range(N_CLASSES))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return root / "data.yaml", int(counts.sum())


def create_rate(folder: Path, n: int = 5000) -> float:
    """Images/s at which a bare loop creates one empty file plus one symlink (split's minimum work) in folder."""
    probe = tempfile.mkdtemp(dir=folder)
    t = time.perf_counter()
    for i in range(n):
        open(f"{probe}/{i}.txt", "w").close()
        os.symlink(f"{probe}/{i}.txt", f"{probe}/{i}.jpg")
    rate = n / (time.perf_counter() - t)
    shutil.rmtree(probe)
    return rate


def run_one(data: str, mode: str, out: str) -> None:
    """Child process: split once, print {seconds, rss_base_mib, rss_peak_mib} as JSON on the last stdout line."""
    from ultralytics.utils import LOGGER

    from yolo_partial.split import split_dataset

    LOGGER.setLevel("WARNING")  # the per-class table is not what is measured
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    split_dataset(data, mode, seed=0, out=out)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_base_mib": base, "rss_peak_mib": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--modes", nargs="+", default=["hard", "miss50"])
    p.add_argument("--dir", type=Path, default=None, help="work folder (default: a new temporary folder, removed)")
    p.add_argument("--one", nargs=3, metavar=("DATA", "MODE", "OUT"), help=argparse.SUPPRESS)  # child process
    args = p.parse_args()
    if args.one:
        run_one(*args.one)
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="split-bench-"))
    try:
        t = time.perf_counter()
        data, n_boxes = generate(work / "src", args.files)
        print(f"generated {args.files} label files, {n_boxes} boxes ({n_boxes / args.files:.2f}/file) "
              f"in {time.perf_counter() - t:.1f} s; cpus={os.cpu_count()}")
        print(f"work folder {work}; 'bare loop' = images/s of a loop creating just one file + one symlink per image "
              f"there, measured right before the split (the filesystem's ceiling for split)")
        print("| mode | files | seconds | files/s | bare loop files/s | peak RSS MiB | RSS growth over imports MiB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for mode in args.modes:
            ceiling = create_rate(work)
            cmd = [sys.executable, __file__, "--one", str(data), mode, str(work / f"out-{mode}")]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            growth = r["rss_peak_mib"] - r["rss_base_mib"]
            print(f"| {mode} | {args.files} | {r['seconds']:.1f} | {args.files / r['seconds']:,.0f} | {ceiling:,.0f} "
                  f"| {r['rss_peak_mib']:.0f} | {growth:.0f} |")
            shutil.rmtree(work / f"out-{mode}")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
