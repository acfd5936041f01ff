"""Time `convert dusia` on every shared DUSIA XML (labels only: no videos are shared), pinned to one CPU core.

Each repeat converts into a fresh temporary folder; wall and CPU seconds per repeat are reported with the per-split
counts of the last run, as a markdown table. Target: under 60 s on one core (issue #3).

    python benchmarks/convert_dusia.py [--dusia ../shared/datasets/dusia] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")  # the per-run report would repeat; the table below has the counts

from yolo_partial.convert.dusia import CLASSES, convert_dusia  # noqa: E402

TARGET_S = 60.0


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else the machine type."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    """Parse arguments, pin to one core, convert `--repeats` times and print the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dusia", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/dusia")
    parser.add_argument("--repeats", type=int, default=3)
    opt = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opt.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            summary = convert_dusia(opt.dusia / "cvat_annos", opt.dusia / "idd_lsts", Path(tmp) / f"run{i}")
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    xml = summary["xml"]
    print(
        f"{xml['files']} XMLs ({xml['shapes']} shapes, {xml['tracks']} tracks, {xml['boxes']} <box>), "
        f"{len(summary['absent_xml'])} listed videos without XML skipped; "
        f"{cpu_name()}, 1 core (sched_setaffinity), Python {sys.version.split()[0]}\n"
    )
    print("| repeat | wall s | CPU s |\n|---:|---:|---:|")
    for i, (w, c) in enumerate(zip(walls, cpus)):
        print(f"| {i} | {w:.2f} | {c:.2f} |")
    median = statistics.median(walls)
    print(f"\nmedian wall {median:.2f} s (target < {TARGET_S:.0f} s: {'met' if median < TARGET_S else 'NOT met'})\n")
    splits = summary["splits"]
    print("| split | frames | boxes | boxes/frame | boxes/frame before crop |\n|---|---:|---:|---:|---:|")
    for name, s in splits.items():
        per_frame = f"{s['boxes_per_frame']:.2f} | {s['uncropped_boxes_per_frame']:.2f}"
        print(f"| {name} | {s['frames']} | {s['boxes']} | {per_frame} |")
    print("\n| class | " + " | ".join(splits) + " |\n|---|" + "---:|" * len(splits))
    for c in CLASSES:
        print(f"| {c} | " + " | ".join(str(s["per_class"][c]) for s in splits.values()) + " |")


if __name__ == "__main__":
    main()
