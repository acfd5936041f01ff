"""Does an edit of a method's source keep a benchmark row's behaviour? Train the row briefly at two commits, compare.

The accuracy benchmark keys every record by a hash of the source that shapes the run (`accuracy.code_hash`), so any
edit of a method's file retires that method's records, a refactor included. This script trains one row for a few
epochs from the same start, deterministically (seed 0, no dataloader workers), once with the package of --base (a git
worktree of that commit) and once with the working tree's, and compares, bit for bit, every per-epoch figure of
results.csv but the wall time (losses and the methods' counts) and every tensor of the final checkpoint's model and
EMA. When a row matches it prints the `CODE_EQUIVALENT` entry of accuracy.py that lets its records stand for the new
code, for runs with the row's method keys; where the edit changes behaviour for other settings of those methods,
the entry must name the settings it leaves alone (e.g. teacher_calib='recall').

A match is evidence only where the run exercised the edited code: the counts it prints (e.g. the teacher's positives
and uncertain boxes per image) say whether it did; --model starts from a trained checkpoint so that a teacher mines
from the first batch.

Usage:
  python benchmarks/equivalence.py --base HEAD --rows teacher teacher+bpr-obj [--model best.pt] [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SHORT = {"imgsz": 160, "batch": 16, "seed": 0, "deterministic": True, "workers": 0, "plots": False, "val": False,
         "device": "cpu", "fraction": 0.25, "exist_ok": True}

# run inside a subprocess whose sys.path starts with one tree: trains the row, prints its code hash as JSON
CHILD = """
import json, sys
sys.path.insert(1, {bench!r})
from accuracy import ROWS, code_hash, combo_keys
from ultralytics import YOLO
from yolo_partial.trainer import PartialDetectionTrainer
row = {row!r}
keys = combo_keys(row) if row.startswith("combo:") else ROWS[row]
YOLO({model!r}).train(trainer=PartialDetectionTrainer, data={data!r}, project={project!r}, name={name!r},
                      epochs={epochs}, **{short!r}, **keys)
import yolo_partial
print("EQUIVALENCE " + json.dumps({{"code": code_hash(keys, {root!r}), "package": yolo_partial.__file__}}))
"""


def train(tree: Path, row: str, data: str, model: str, epochs: int, out: Path) -> dict:
    """Train `row` with the package of `tree` into out/<tree name>-<row> -> {code, package, dir}."""
    name = f"{tree.name}-{row.replace(':', '-').replace('+', '_')}"
    src = CHILD.format(bench=str(REPO / "benchmarks"), row=row, model=model, data=data, project=str(out), name=name,
                       epochs=epochs, short=SHORT, root=str(tree))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    p = subprocess.run([sys.executable, "-c", src], env=env, capture_output=True, text=True, cwd=out.parent)
    if p.returncode:
        sys.exit(f"{row} at {tree}: training failed:\n{p.stderr[-3000:]}")
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("EQUIVALENCE "))
    info = json.loads(line.split(" ", 1)[1])
    if not Path(info["package"]).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"{row} at {tree}: imported yolo_partial from {info['package']}, expected the tree's own")
    return {**info, "dir": out / name}


def results(run: Path) -> list[dict]:
    """results.csv rows without the wall-time column, values as written."""
    with open(run / "results.csv") as f:
        return [{k.strip(): v.strip() for k, v in r.items() if k.strip() != "time"} for r in csv.DictReader(f)]


def weights_differ(a: Path, b: Path) -> list[str]:
    """Names of the tensors of last.pt's model (and EMA, while a run keeps one) that differ between two runs."""
    import torch

    out = []
    ca, cb = (torch.load(p / "weights" / "last.pt", map_location="cpu", weights_only=False) for p in (a, b))
    for part in ("model", "ema"):  # a finished run's checkpoint keeps the EMA as its model, its ema entry None
        if ca.get(part) is None or cb.get(part) is None:
            out += [part] if (ca.get(part) is None) != (cb.get(part) is None) else []
            continue
        sa, sb = ca[part].float().state_dict(), cb[part].float().state_dict()
        out += [f"{part}.{k}" for k in sa if k not in sb or not torch.equal(sa[k], sb[k])]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="HEAD", help="the commit whose code the records were made with")
    p.add_argument("--rows", nargs="+", required=True, help="accuracy.py rows (or combo:A+B)")
    p.add_argument("--variant", default="extreme", choices=("hard", "extreme"))
    p.add_argument("--model", default="yolov8n.yaml", help="start: a model YAML or a trained checkpoint")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from accuracy import ROWS, combo_keys, datasets

    work = Path(os.environ.get("YOLO_PARTIAL_BENCH", REPO / "runs" / "benchmarks" / "accuracy_cpu")).absolute()
    data = datasets(work)[1][a.variant]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base), a.base], check=True)
        try:
            out = Path(tmp) / "runs"
            for row in a.rows:
                old = train(base, row, data, a.model, a.epochs, out)
                new = train(REPO, row, data, a.model, a.epochs, out)
                ro, rn = results(old["dir"]), results(new["dir"])
                bad = weights_differ(old["dir"], new["dir"])
                same = ro == rn and not bad
                counts = {k: [r[k] for r in rn] for k in rn[0] if "teacher_" in k or "pseudo" in k or "drop" in k}
                print(f"{row}: {'IDENTICAL' if same else 'DIFFERENT'} over {a.epochs} epochs "
                      f"(results.csv {'same' if ro == rn else 'differs'}, {len(bad)} weight tensors differ); "
                      f"code {old['code'][:10]} -> {new['code'][:10]}; per-epoch counts {json.dumps(counts)}")
                if same and old["code"] != new["code"]:
                    keys = combo_keys(row) if row.startswith("combo:") else ROWS[row]
                    print(f"  CODE_EQUIVALENT entry (narrow its keys to the settings the edit leaves alone): "
                          f"({new['code']!r}, {old['code']!r}, {keys!r}),")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()
