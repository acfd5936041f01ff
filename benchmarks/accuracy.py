"""Accuracy benchmark: every method on partial labels against the baseline on partial and on complete labels.

For each partial dataset and seed it trains the baseline on the complete labels and on the partial labels, then each
method on the partial labels, all with the same model, seed and budget, and reports val mAP50, mAP50-95, hidden-object
recall and gap closed = (method - baseline_partial) / (baseline_full - baseline_partial), with mean and spread over the
seeds. After the single methods, the best two (by mean gap closed over the partial datasets) are combined and run too.

Suites:
  cpu  the embedded shapes dataset: its own hidden objects, and its complete labels made partial by `split`
       (hard and extreme, seed 0); yolov8n from scratch at 160 px.
  gpu  the shared Aquarium dataset made partial by `split` (hard and extreme, seed 0) at a real budget.

Each finished run is saved as runs/<name>.json, so an interrupted benchmark continues where it stopped.

Usage:
  python benchmarks/accuracy.py --suite cpu [--seeds 0 1] [--epochs 5] [--out benchmarks/results/accuracy_cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"

METHODS = {
    "baseline": {},
    "bpr-obj": {"drop_neg_obj": 0.75},
    "bpr-box": {"drop_neg_box": 0.25},
    "brl": {"brl": True},
    "scb": {"scb": True},
    "comining": {"comining": True},
}
SUITES = {
    "cpu": {"model": "yolov8n.yaml", "imgsz": 160, "epochs": 5, "batch": 16, "device": "cpu"},
    "gpu": {"model": "yolov8n.yaml", "imgsz": 512, "epochs": 150, "batch": 32, "device": 0},
}


def datasets(suite: str, work: Path) -> dict[str, tuple[str, str]]:
    """{partial dataset name: (partial data YAML, complete data YAML)} for the suite, splits made on first use."""
    from yolo_partial.split import split_dataset

    if suite == "cpu":
        from yolo_partial.shapes import ensure_shapes

        full = str(ensure_shapes("full"))
        sets = {"shapes-own": (str(ensure_shapes("partial")), full)}
    else:
        full = str(SHARED / "aquarium" / "data.yaml")
        sets = {}
    name = "shapes" if suite == "cpu" else "aquarium"
    for mode in ("hard", "extreme"):
        out = work / "data" / f"{name}-{mode}-s0"
        yaml_path = out / "data.yaml"
        if not yaml_path.is_file():
            split_dataset(full, mode=mode, seed=0, out=out)
        sets[f"{name}-{mode}"] = (str(yaml_path), full)
    return sets


def run(work: Path, name: str, data: str, keys: dict, seed: int, budget: dict) -> dict:
    """Train and evaluate one configuration unless its result exists -> the result dict."""
    done = work / "runs" / f"{name}.json"
    if done.is_file():
        return json.loads(done.read_text())
    from ultralytics import YOLO

    from yolo_partial.fileio import write_text_atomic
    from yolo_partial.reproduce import evaluate
    from yolo_partial.trainer import PartialDetectionTrainer

    train = {k: v for k, v in budget.items() if k != "model"}
    t0 = time.time()
    YOLO(budget["model"]).train(
        trainer=PartialDetectionTrainer, data=data, seed=seed, project=str(work / "runs"), name=name, exist_ok=True,
        plots=False, val=False, workers=2, **train, **keys,
    )  # fmt: skip
    result = {"name": name, "seed": seed, "keys": keys, "train_s": round(time.time() - t0, 1)}
    result.update(evaluate(work / "runs" / name / "weights" / "best.pt", {**budget, "data": data}))
    write_text_atomic(done, json.dumps(result, indent=1))
    return result


def gap_closed(m: float, partial: float, full: float) -> float:
    """Share of the partial-label gap closed by a method: 0 = no better than the baseline, 1 = as good as full labels."""
    return (m - partial) / (full - partial) if full != partial else math.nan


def summarise(results: list[dict]):
    """Per (dataset, method) mean and std over seeds of mAP50, mAP50-95, hidden recall and gap closed."""
    import pandas as pd

    df = pd.DataFrame(results)
    base = df[df.method == "baseline"].set_index(["dataset", "seed"])
    full = df[df.method == "baseline-full"].set_index(["dataset", "seed"])
    gaps = []
    for _, r in df.iterrows():
        key = (r.dataset, r.seed)
        ok = key in base.index and key in full.index
        gaps.append(gap_closed(r["val mAP50"], base.loc[key, "val mAP50"], full.loc[key, "val mAP50"]) if ok else math.nan)
    df["gap closed"] = gaps
    cols = ["val mAP50", "val mAP50-95", "hidden recall", "gap closed"]
    cols = [c for c in cols if c in df]
    agg = df.groupby(["dataset", "method"], sort=False)[cols].agg(["mean", "std"])
    return df, agg


def table_markdown(agg) -> str:
    """mean ± std cells, one row per dataset and method."""
    rows = []
    for (dataset, method), r in agg.iterrows():
        cells = []
        for col in dict.fromkeys(c for c, _ in agg.columns):
            mean, std = r[(col, "mean")], r[(col, "std")]
            fmt = ".2f" if col == "gap closed" else ".1f"
            cells.append("–" if math.isnan(mean) else f"{mean:{fmt}} ± {0 if math.isnan(std) else std:{fmt}}")
        rows.append(f"| {dataset} | {method} | " + " | ".join(cells) + " |")
    head = "| dataset | method | " + " | ".join(dict.fromkeys(c for c, _ in agg.columns)) + " |"
    return "\n".join([head, "|" + "---|" * (2 + len(dict.fromkeys(c for c, _ in agg.columns)))] + rows)


def plot(agg, path: Path) -> None:
    """Grouped bar chart: val mAP50 per method, one group per dataset, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sets = list(dict.fromkeys(d for d, _ in agg.index))
    methods = list(dict.fromkeys(m for _, m in agg.index))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(sets) * len(methods) / 3), 4), tight_layout=True)
    w = 0.8 / len(methods)
    for i, m in enumerate(methods):
        means = [agg.loc[(d, m), ("val mAP50", "mean")] if (d, m) in agg.index else np.nan for d in sets]
        stds = [agg.loc[(d, m), ("val mAP50", "std")] if (d, m) in agg.index else np.nan for d in sets]
        ax.bar(np.arange(len(sets)) + i * w, means, w, yerr=np.nan_to_num(stds), label=m, capsize=2)
    ax.set_xticks(np.arange(len(sets)) + 0.4 - w / 2, sets)
    ax.set_ylabel("val mAP50 (%)")
    ax.legend(fontsize=7, ncol=3)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=SUITES, default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="subset of " + " ".join(METHODS))
    p.add_argument("--no-combo", action="store_true", help="skip the combination of the two best methods")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    budget = {**SUITES[a.suite], **({"epochs": a.epochs} if a.epochs else {})}
    out = (a.out or REPO / "benchmarks" / "results" / f"accuracy_{a.suite}").absolute()
    work = Path(os.environ.get("YOLO_PARTIAL_BENCH", REPO / "runs" / "benchmarks" / f"accuracy_{a.suite}")).absolute()
    t0 = time.time()
    sets = datasets(a.suite, work)
    results = []

    def record(dataset, method, data, keys, seed):
        name = f"full-s{seed}" if method == "baseline-full" else f"{dataset}-{method}-s{seed}"  # one full per suite
        r = run(work, name, data, keys, seed, budget)
        results.append({**r, "dataset": dataset, "method": method})

    for seed in a.seeds:
        for dataset, (partial, full) in sets.items():
            record(dataset, "baseline-full", full, {}, seed)
            for method in a.methods:
                record(dataset, method, partial, METHODS[method], seed)
    combo = None
    if not a.no_combo:
        _, agg = summarise(results)
        singles = agg.drop(index=["baseline", "baseline-full"], level="method", errors="ignore")
        best = singles[("gap closed", "mean")].groupby(level="method").mean().nlargest(2).index.tolist()
        combo = "+".join(best)
        for seed in a.seeds:
            for dataset, (partial, _) in sets.items():
                record(dataset, combo, partial, {k: v for m in best for k, v in METHODS[m].items()}, seed)
    df, agg = summarise(results)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "runs.csv", index=False)
    plot(agg, out / "accuracy.png")
    cmd = "python benchmarks/accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = (f"# Accuracy benchmark, suite `{a.suite}`\n\nCommand: `{cmd}`\n\nBudget: {budget}; seeds {a.seeds}; "
            f"wall time {(time.time() - t0) / 60:.1f} min (finished runs are reused).\n"
            f"Combination: {combo or 'not run'} (the two single methods with the highest mean gap closed).\n\n"
            f"mAP and hidden recall in percent, mean ± std over seeds; gap closed = (method - baseline) / "
            f"(baseline-full - baseline) on val mAP50.\n\n{table_markdown(agg)}\n\n![accuracy](accuracy.png)\n")
    (out / "accuracy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
