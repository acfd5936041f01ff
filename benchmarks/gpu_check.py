"""GPU check: five trainings on partially labelled Aquarium, run concurrently on one GPU, in under 6 minutes.

On the shared Aquarium data made `hard` by `yolo-partial split` (seed 0): yolov8n from scratch at 640 px with AMP,
rows complete-label baseline, partial baseline, BPR-obj, teacher, teacher + BPR-obj, all started at once on the one
GPU (16 CPU cores: 3 dataloader workers each), `plots=False`, each bounded by Ultralytics' `time=` key (hours; it
overrides `epochs`). Writes gpu_check.md (table), gpu_check.csv and gpu_check.png to the folder given by --out, and
nothing else there (the runs live in a work folder).

The GPU machine has torch and CUDA but neither Ultralytics nor a package registry, and what it needs travels in at
most 64 MiB. So the check has two steps:

  python benchmarks/gpu_check.py --prepare runs/gpu_bundle                  # CPU machine, with the registry
  python benchmarks/gpu_check.py --bundle runs/gpu_bundle --out OUT          # GPU machine

`--prepare DIR` finds which distributions a training + evaluation really imports with plots=False (a tiny run in a
subprocess, with this script's two patches: no font check, results.csv read without polars, so neither matplotlib
nor polars is needed), drops those any torch + torchvision install has (their own requirements, numpy and Pillow
among them), downloads the rest at the installed versions with pip (`opencv-python-headless` for `opencv-python`:
the same cv2, without Qt), and packs their extracted files as DIR/site.tar.xz (xz packs the extracted files to 2/3 of
the wheels' size), with DIR/aquarium.tar (train and val images, re-encoded at JPEG quality 75 and long side at most
640 px, and the complete labels) and DIR/manifest.json.
`--bundle DIR` unpacks the site folder only when a needed module is missing there (appended to sys.path, so what the
machine has wins), copies this checkout's yolo_partial (with cfg/ and data/ as the package ships them), splits the
data and runs the rows. `--dry-run` runs the same path on the CPU with the current environment, a handful of images,
imgsz 64 and batch 2, for a few steps (a CI test: tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AQUARIUM = REPO.parent / "shared" / "datasets" / "aquarium"
LIMIT_MIB = 64
ROWS = {  # name -> (data: "full" or "hard", method keys)
    "baseline-full": ("full", {}),
    "baseline": ("hard", {}),
    "bpr-obj": ("hard", {"drop_neg_obj": 0.75}),
    "teacher": ("hard", {"teacher": True}),
    "teacher+bpr-obj": ("hard", {"teacher": True, "drop_neg_obj": 0.75}),
}
GPU = dict(model="yolov8n.yaml", imgsz=640, batch=16, epochs=300, time=0.06, amp=True, device="0", workers=3,
           plots=False, val=False, seed=0)  # fmt: skip
DRY = dict(model="yolov8n.yaml", imgsz=64, batch=2, epochs=1, time=None, amp=False, device="cpu", workers=0,
           plots=False, val=False, seed=0)  # fmt: skip
DRY_KEYS = {"teacher": {"teacher_warmup": 0}}  # one dry epoch: the teacher mines in it (the GPU rows warm up 1 epoch)
GPU_WALL_S, DRY_WALL_S = 330, 240  # the rows are stopped after this (the check itself must end within 6 minutes)
DRY_IMAGES = (6, 3)  # train, val images of the dry run
MAX_SIDE = 640  # long side of the bundled images
JPEG_QUALITY = 75  # re-encoding at 75 takes the 25.7 MB of train + val images to ~22 MB, so the bundle fits 64 MiB
# what the GPU machine has by assumption: torch and torchvision (whose own requirements come with them)
BASE = ("torch", "torchvision")
RENAME = {"opencv-python": "opencv-python-headless"}  # the same cv2 module, 13 MB smaller


# ----------------------------------------------------------------------------------------------- lean Ultralytics
def lean_ultralytics() -> None:
    """The two patches that keep matplotlib and polars out of a plots=False run (both are large wheels).

    yolo_partial's offline font guard imports matplotlib to find a local font, and Ultralytics' dataset check asks for
    a font although plots=False draws no text: the check becomes a no-op. Ultralytics reads results.csv with polars
    for every checkpoint (`train_results`): the csv module gives the same {column: values} dict.
    """
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as engine
    import ultralytics.utils.plotting as plotting

    def no_font(font: str = "Arial.ttf"):
        return None

    no_font._yolo_partial = True  # tells yolo_partial's guard it is already local
    data_utils.check_font = plotting.check_font = no_font

    def read_results_csv(self) -> dict:
        if not Path(self.csv).is_file():
            return {}
        with open(self.csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return {k.strip(): [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}

    engine.BaseTrainer.read_results_csv = read_results_csv


# ----------------------------------------------------------------------------------------------- data
def gather_data(src: Path, dst_tar: Path, subset: tuple[int, int] | None = None) -> dict:
    """Pack Aquarium's train and val images (long side at most MAX_SIDE, JPEG_QUALITY) and complete labels, with
    a data.yaml, into an uncompressed tar (JPEGs do not compress) -> counts."""
    import yaml
    from PIL import Image

    names = yaml.safe_load((src / "data.yaml").read_text())["names"]
    counts = {}
    with tarfile.open(dst_tar, "w") as tar:
        for split, n in zip(("train", "val"), subset or (None, None)):
            ims = sorted(p for p in (src / "images" / split).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
            ims = ims[:n] if n else ims
            counts[split] = len(ims)
            for im in ims:
                with Image.open(im) as img:
                    img = img.convert("RGB")
                    s = MAX_SIDE / max(img.size)
                    if s < 1:
                        img = img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
                    buf = io.BytesIO()
                    img.save(buf, "JPEG", quality=JPEG_QUALITY)
                _add_bytes(tar, f"aquarium/images/{split}/{im.stem}.jpg", buf.getvalue())
                lb = src / "labels" / split / f"{im.stem}.txt"
                _add_bytes(tar, f"aquarium/labels/{split}/{im.stem}.txt", lb.read_bytes() if lb.is_file() else b"")
        text = "train: images/train\nval: images/val\nnames:\n" + "".join(f"  {i}: {n}\n" for i, n in names.items())
        _add_bytes(tar, "aquarium/data.yaml", text.encode())
    return counts


def _extract(tar: tarfile.TarFile, dst: Path) -> None:
    try:
        tar.extractall(dst, filter="data")
    except TypeError:  # Python before 3.11.4 / 3.10.12: no extraction filters (the archive is our own)
        tar.extractall(dst)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def unpack_data(data_tar: Path, work: Path) -> tuple[str, str]:
    """Unpack the data, point its YAML at where it lies, make the `hard` split -> (complete YAML, hard YAML)."""
    from yolo_partial.split import split_dataset

    with tarfile.open(data_tar) as tar:
        _extract(tar, work)
    full = work / "aquarium" / "data.yaml"
    full.write_text(f"path: {full.parent}\n" + full.read_text())
    out = work / "aquarium-hard-s0"
    split_dataset(str(full), mode="hard", seed=0, out=out)
    return str(full), str(out / "data.yaml")


# ----------------------------------------------------------------------------------------------- packages
def copy_package(work: Path) -> Path:
    """This checkout's yolo_partial as its wheel lays it out (cfg/ and data/ inside as yolo_partial.assets.cfg/.data),
    in work/pkg: the code that runs is the code of the checkout, with no build step."""
    pkg = work / "pkg"
    shutil.rmtree(pkg, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "yolo_partial", pkg / "yolo_partial", ignore=ignore)
    shutil.copytree(REPO / "cfg", pkg / "yolo_partial" / "assets" / "cfg", ignore=ignore)
    shutil.copytree(REPO / "data", pkg / "yolo_partial" / "assets" / "data", ignore=ignore)
    return pkg


def _requirement_closure(names: tuple[str, ...]) -> set[str]:
    """Normalised names of `names` and everything they require (as installed here), recursively."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    seen, todo = set(), [*names]
    while todo:
        n = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if n in seen:
            continue
        seen.add(n)
        try:
            reqs = requires(n) or []
        except PackageNotFoundError:
            continue
        todo += [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in reqs if "extra ==" not in r]
    return seen


def needed_distributions(modules: list[str]) -> dict[str, tuple[str, list[str]]]:
    """{distribution: (version, its top-level modules that the run imported)} for the imported modules that a torch +
    torchvision install does not bring, yolo_partial excluded (it travels as the checkout)."""
    import re
    from importlib.metadata import packages_distributions, version

    base = _requirement_closure(BASE)
    found: dict[str, tuple[str, list[str]]] = {}
    for mod, dists in packages_distributions().items():
        if mod not in modules:
            continue
        for d in dists:
            key = re.sub(r"[-_.]+", "-", d).lower()
            if key in base or key == "yolo-partial":
                continue
            found.setdefault(d, (version(d), []))[1].append(mod)
    return found


def prepare(bundle: Path, src: Path) -> None:
    """The CPU-machine step: probe the imports, download and pack the wheels, pack the data, check the size."""
    bundle.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_tar = bundle / "aquarium.tar"
        counts = gather_data(src, data_tar)
        print(f"[gpu_check] data: {counts} images -> {data_tar} ({data_tar.stat().st_size / 2**20:.1f} MiB)")
        probe = run_all(tmp / "probe", src, dry=True, site=None, out=None, rows=["teacher+bpr-obj"])
        modules = probe["teacher+bpr-obj"]["modules"]
        dists = needed_distributions(modules)
        print("[gpu_check] imported and not brought by torch/torchvision: "
              + ", ".join(f"{d}=={v} ({', '.join(m)})" for d, (v, m) in sorted(dists.items())))  # fmt: skip
        wheels = tmp / "wheels"
        pins = [f"{RENAME.get(d, d)}=={v}" for d, (v, _) in sorted(dists.items())]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
                        str(wheels), *pins], check=True)  # fmt: skip
        site = tmp / "site"
        import zipfile

        for w in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
        import lzma

        with tarfile.open(bundle / "site.tar.xz", "w:xz", preset=9) as tar:
            tar.add(site, arcname="site")
    manifest = {"distributions": {d: v for d, (v, _) in dists.items()},
                "modules": sorted(m for _, ms in dists.values() for m in ms),
                "base": list(BASE), "python": sys.version.split()[0], "created": time.strftime("%Y-%m-%d %H:%M"),
                "data": counts}  # fmt: skip
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))
    total = sum(p.stat().st_size for p in bundle.iterdir()) / 2**20
    print(f"[gpu_check] bundle {bundle}: {total:.1f} MiB in {time.time() - t0:.0f} s "
          f"({', '.join(f'{p.name} {p.stat().st_size / 2**20:.1f}' for p in sorted(bundle.iterdir()))})")
    if total > LIMIT_MIB:
        raise SystemExit(f"gpu_check: the bundle is {total:.1f} MiB, over the {LIMIT_MIB} MiB that can travel")
    _ = lzma  # tarfile's xz mode needs the lzma module (stdlib)


def install_bundle(bundle: Path, work: Path) -> Path | None:
    """Unpack the bundle's site folder when a module it provides is missing here -> its path (None: nothing needed)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    missing = [m for m in manifest["modules"] if importlib.util.find_spec(m) is None]
    for m in ("torch", "torchvision", "numpy", "PIL"):
        if importlib.util.find_spec(m) is None:
            raise SystemExit(f"gpu_check: this machine lacks {m}, which the bundle assumes (torch + torchvision)")
    if not missing:
        return None
    print(f"[gpu_check] unpacking {bundle / 'site.tar.xz'} for {', '.join(missing)}", flush=True)
    with tarfile.open(bundle / "site.tar.xz") as tar:
        _extract(tar, work)
    return work / "site"


# ----------------------------------------------------------------------------------------------- one row
def run_row(spec: dict) -> dict:
    """Train and evaluate one row (in its own process) -> its result, also written to spec['result']."""
    if spec["site"]:
        sys.path.append(spec["site"])  # after the machine's own packages: those win
    os.environ.setdefault("YOLO_OFFLINE", "1")
    lean_ultralytics()
    from ultralytics import YOLO

    from yolo_partial.hidden import find_manifest, hidden_recall, load_manifest
    from yolo_partial.trainer import PartialDetectionTrainer

    budget = {k: v for k, v in spec["budget"].items() if v is not None}
    t0 = time.time()
    model = YOLO(budget.pop("model"))
    model.train(trainer=PartialDetectionTrainer, data=spec["data"], project=spec["project"], name=spec["row"],
                exist_ok=True, verbose=False, **budget, **spec["keys"])  # fmt: skip
    tr = model.trainer
    result = {"row": spec["row"], "keys": spec["keys"], "epochs": tr.epoch + 1, "train s": round(time.time() - t0, 1)}
    kw = {k: budget[k] for k in ("imgsz", "batch", "device")}
    m = YOLO(str(tr.best)).val(data=spec["data"], plots=False, verbose=False, **kw)
    result.update({"val mAP50": 100 * m.box.map50, "val mAP50-95": 100 * m.box.map})
    r = hidden_recall(YOLO(str(tr.best)), load_manifest(find_manifest(spec["hidden_data"])), **kw)
    result.update({"hidden recall": 100 * r["hidden_recall"], "hidden AP50": 100 * r["hidden_ap"]})
    with open(tr.csv, newline="") as f:
        last = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)][-1]
    for k in ("train/teacher_pos", "train/teacher_unc", "teacher_hit_share", "teacher_tau_hi", "teacher_tau_lo"):
        if k in last:
            result[k.split("/")[-1]] = float(last[k])
    result["modules"] = sorted({n.split(".")[0] for n in sys.modules})
    Path(spec["result"]).write_text(json.dumps(result))
    return result


def run_all(work: Path, src: Path, dry: bool, site: Path | None, out: Path | None,
            rows: list[str] | None = None, bundle: Path | None = None) -> dict:
    """Unpack (or gather, on a dry run without a bundle) the data, split it, start every row at once, wait, collect."""
    work.mkdir(parents=True, exist_ok=True)
    data_tar = bundle / "aquarium.tar" if bundle else work / "aquarium.tar"
    if not bundle:
        gather_data(src, data_tar, DRY_IMAGES if dry else None)
    pkg = copy_package(work)
    sys.path.insert(0, str(pkg))
    full, hard = unpack_data(data_tar, work / "data")
    budget, wall = (DRY, DRY_WALL_S) if dry else (GPU, GPU_WALL_S)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "PYTHONPATH": str(pkg),
           "YOLO_CONFIG_DIR": str(work / "config")}  # fmt: skip
    # one intra-op thread per row: the rows' heavy work is on the GPU (or tiny on a dry run), their dataloader workers
    # are processes of their own, and five processes of default-sized thread pools contend for the cores (on a loaded
    # 2-core machine a 64 px forward measured 3.6 s with two threads, 0.06 s with one)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = {}
    for row in rows or list(ROWS):
        which, keys = ROWS[row]
        if dry and keys.get("teacher"):
            keys = {**keys, **DRY_KEYS["teacher"]}
        spec = {"row": row, "keys": keys, "budget": budget, "data": full if which == "full" else hard,
                "hidden_data": hard, "project": str(work / "runs"), "result": str(work / f"{row}.json"),
                "site": str(site) if site else None}  # fmt: skip
        log = open(work / f"{row}.log", "w")
        procs[row] = (subprocess.Popen([sys.executable, __file__, "--row", json.dumps(spec)], env=env, stdout=log,
                                       stderr=subprocess.STDOUT, cwd=work), log)  # fmt: skip
    t0, results = time.time(), {}
    for row, (p, log) in procs.items():
        try:
            p.wait(timeout=max(1.0, wall - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        f = work / f"{row}.json"
        if p.returncode == 0 and f.is_file():
            results[row] = json.loads(f.read_text())
        else:
            tail = (work / f"{row}.log").read_text()[-1500:]
            print(f"[gpu_check] row {row} failed (exit {p.returncode}):\n{tail}", flush=True)
            results[row] = {"row": row, "keys": ROWS[row][1], "failed": True}
    if out is not None:
        write_outputs(results, out, budget, time.time() - t0, dry)
    return results


# ----------------------------------------------------------------------------------------------- outputs
COLUMNS = ("epochs", "train s", "val mAP50", "val mAP50-95", "gap closed", "hidden recall", "hidden AP50",
           "teacher_pos", "teacher_unc", "teacher_hit_share")  # fmt: skip


def write_outputs(results: dict, out: Path, budget: dict, wall: float, dry: bool) -> None:
    """gpu_check.md, gpu_check.csv and gpu_check.png in `out` (three files)."""
    out.mkdir(parents=True, exist_ok=True)
    full = results.get("baseline-full", {}).get("val mAP50", math.nan)
    base = results.get("baseline", {}).get("val mAP50", math.nan)
    for r in results.values():
        m = r.get("val mAP50", math.nan)
        r["gap closed"] = (m - base) / (full - base) if full != base and not math.isnan(full - base) else math.nan
    with open(out / "gpu_check.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "keys", *COLUMNS])
        for r in results.values():
            w.writerow([r["row"], json.dumps(r["keys"]), *(r.get(c, "") for c in COLUMNS)])

    def cell(v):
        return "–" if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else (
            f"{v:.2f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}" if isinstance(v, float) else str(v))

    lines = [f"# GPU check{' (dry run)' if dry else ''}", "",
             f"Aquarium made `hard` by `yolo-partial split` (seed 0); {budget}; rows concurrent on one device; "
             f"wall {wall:.0f} s for the rows.", "",
             "| row | keys | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * len(COLUMNS)]  # fmt: skip
    for r in results.values():
        keys = " ".join(f"{k}={v}" for k, v in r["keys"].items()) or "–"
        lines.append(f"| {r['row']} | {keys} | " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |")
    lines += ["", "gap closed = (row - baseline) / (baseline-full - baseline) on val mAP50; hidden recall and AP50 on "
              "the boxes the split removed (score >= 0.25 for recall)."]  # fmt: skip
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    bar_chart(results, out / "gpu_check.png")


def bar_chart(results: dict, path: Path) -> None:
    """Val mAP50 and hidden recall per row as grouped bars, drawn with Pillow (no matplotlib on the GPU machine)."""
    from PIL import Image, ImageDraw

    rows = list(results.values())
    w, h, left, bottom, top = 120 * len(rows) + 80, 360, 50, 60, 30
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    vals = [v for r in rows for v in (r.get("val mAP50"), r.get("hidden recall")) if isinstance(v, float)]
    vmax = max([v for v in vals if not math.isnan(v)] or [1.0]) * 1.1 or 1.0
    d.line([(left, top), (left, h - bottom), (w - 10, h - bottom)], fill="black")
    for i, r in enumerate(rows):
        x0 = left + 20 + 120 * i
        for j, (key, colour) in enumerate((("val mAP50", (31, 119, 180)), ("hidden recall", (255, 127, 14)))):
            v = r.get(key)
            if isinstance(v, float) and not math.isnan(v):
                y = h - bottom - (h - bottom - top) * v / vmax
                d.rectangle([x0 + 40 * j, y, x0 + 40 * j + 36, h - bottom], fill=colour)
                d.text((x0 + 40 * j, y - 12), f"{v:.1f}", fill="black")
        d.text((x0, h - bottom + 8), r["row"][:18], fill="black")
    d.text((left, 8), "val mAP50 (blue), hidden recall (orange), %", fill="black")
    img.save(path)


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prepare", type=Path, metavar="DIR", help="CPU machine: gather wheels and data into DIR")
    mode.add_argument("--bundle", type=Path, metavar="DIR", help="GPU machine: run the check from a prepared DIR")
    mode.add_argument("--dry-run", action="store_true", help="the same path on the CPU, tiny, for a few steps")
    mode.add_argument("--row", help=argparse.SUPPRESS)  # one row, in its own process
    ap.add_argument("--out", type=Path, help="folder for gpu_check.md, .csv and .png")
    ap.add_argument("--aquarium", type=Path, default=AQUARIUM, help="the Aquarium dataset (default: ../shared)")
    ap.add_argument("--work", type=Path, help="work folder for data and runs (default: a temporary folder)")
    a = ap.parse_args(argv)
    if a.row:
        run_row(json.loads(a.row))
        return 0
    if a.prepare:
        prepare(a.prepare, a.aquarium)
        return 0
    if a.out is None:
        ap.error("--out is required with --bundle and --dry-run")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = a.work or Path(tmp)
        site = install_bundle(a.bundle, work) if a.bundle else None
        if site is not None:
            sys.path.append(str(site))  # for this process's split; the rows append it themselves
        results = run_all(work, a.aquarium, dry=a.dry_run, site=site, out=a.out, bundle=a.bundle)
    print((a.out / "gpu_check.md").read_text())
    print(f"[gpu_check] {time.time() - t0:.0f} s wall")
    return 0 if all(not r.get("failed") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
