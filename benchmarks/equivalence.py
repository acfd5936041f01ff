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

With --loop it checks an edit of the mining code (accuracy.LOOP_CODE) instead: `mine` with the checkpoint --model on
the variant's training split, then `accept` of the unreviewed list, as a round-two row runs them at mine's defaults,
once per tree into the same folder; every file of both outputs but the producer marker must be byte-identical, and it
prints the `LOOP_EQUIVALENT` entry.

Usage:
  python benchmarks/equivalence.py --base HEAD --rows teacher teacher+bpr-obj [--model best.pt] [--epochs 3]
  python benchmarks/equivalence.py --base HEAD --loop --model best.pt [--variant extreme]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
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


# mines and accepts with one tree's package, into {out}/mined and {out}/accepted (mine_loop's calls, its defaults)
LOOP_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(1, {bench!r})
from mine_loop import mine_accept
import yolo_partial
mine_accept(Path({out!r}), Path({model!r}), Path({data!r}), {{"imgsz": 160, "device": "cpu"}}, "mined")
print("EQUIVALENCE " + json.dumps({{"package": yolo_partial.__file__}}))
"""


def mine_tree(tree: Path, model: str, data: str, out: Path) -> dict[str, str]:
    """Mine and accept with the package of `tree` into out/data, then move it to out/<tree name> -> {file: sha256}
    of every output file but the producer markers (which name the keys each tree knows)."""
    from yolo_partial.fileio import MARKER

    work = out / "data"
    src = LOOP_CHILD.format(bench=str(REPO / "benchmarks"), out=str(out), model=model, data=data)
    p = subprocess.run([sys.executable, "-c", src], env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                       text=True, cwd=out)
    if p.returncode:
        sys.exit(f"mining at {tree} failed:\n{p.stderr[-3000:]}")
    info = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("EQUIVALENCE ")).split(" ", 1)[1])
    if not Path(info["package"]).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"mining at {tree}: imported yolo_partial from {info['package']}, expected the tree's own")
    digest = {str(f.relative_to(work)): hashlib.sha256(f.read_bytes()).hexdigest()
              for f in sorted(work.rglob("*")) if f.is_file() and f.name != MARKER}
    shutil.move(work, out / tree.name)
    return digest


def check_loop(base: Path, model: str, data: str, out: Path) -> None:
    """Print whether mine + accept write the same files at both trees, and the LOOP_EQUIVALENT entry if so."""
    from accuracy import loop_hash

    out.mkdir()
    old, new = mine_tree(base, model, data, out), mine_tree(REPO, model, data, out)
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    before, after = loop_hash(base), loop_hash(REPO, mapped=False)  # the hash base's records carry, and ours
    print(f"mine + accept: {'IDENTICAL' if not differ else 'DIFFERENT'} ({len(new)} files, {len(differ)} differ"
          f"{': ' + ', '.join(differ[:5]) if differ else ''}); loop code {before[:10]} -> {after[:10]}")
    if not differ and before != after:
        print(f"  LOOP_EQUIVALENT entry: ({after!r}, {before!r}),")


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
    p.add_argument("--rows", nargs="+", default=[], help="accuracy.py rows (or combo:A+B)")
    p.add_argument("--loop", action="store_true", help="check the mining code instead (--model: a trained checkpoint)")
    p.add_argument("--variant", default="extreme", choices=("hard", "extreme"))
    p.add_argument("--model", default="yolov8n.yaml", help="start: a model YAML or a trained checkpoint")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args(argv)
    if not a.rows and not a.loop:
        p.error("expected --rows or --loop")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from accuracy import ROWS, combo_keys, datasets

    work = Path(os.environ.get("YOLO_PARTIAL_BENCH", REPO / "runs" / "benchmarks" / "accuracy_cpu")).absolute()
    data = datasets(work)[1][a.variant]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base), a.base], check=True)
        try:
            out = Path(tmp) / "runs"
            if a.loop:
                check_loop(base, str(Path(a.model).absolute()), data, Path(tmp) / "loop")
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
