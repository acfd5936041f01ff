"""benchmarks/gpu_check.py: the dry run (the GPU check's code path on the CPU, tiny), the bundle's pieces."""

import csv
import importlib.util
import json
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import AQUARIUM, REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402


@pytest.mark.skipif(not AQUARIUM.is_dir(), reason="../shared/datasets/aquarium not present")
def test_dry_run(tmp_path):
    """Five rows started at once on a handful of Aquarium images at imgsz 64: three files out, every row trained,
    evaluated and in the table; the teacher mined in its one epoch."""
    out = tmp_path / "out"
    t0 = time.time()
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out),
                        "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=300)  # fmt: skip
    wall = time.time() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(f.name for f in out.iterdir()) == ["gpu_check.csv", "gpu_check.md", "gpu_check.png"]
    rows = list(csv.DictReader(open(out / "gpu_check.csv")))
    assert [r["row"] for r in rows] == list(gpu_check.ROWS)
    assert all(r["val mAP50"] != "" and r["hidden recall"] != "" for r in rows)
    teacher = next(r for r in rows if r["row"] == "teacher")
    assert json.loads(teacher["keys"]) == {"teacher": True, "teacher_warmup": 0} and teacher["teacher_pos"] != ""
    modules = json.loads((tmp_path / "work" / "teacher.json").read_text())["modules"]
    assert "matplotlib" not in modules and "polars" not in modules  # what the bundle leaves out is never imported
    print(f"dry run: {wall:.0f} s wall")


def test_needed_distributions_leave_out_torch_and_its_requirements():
    need = gpu_check.needed_distributions(["torch", "numpy", "PIL", "cv2", "yaml", "ultralytics", "yolo_partial"])
    names = {d.lower() for d in need}
    assert {"opencv-python", "pyyaml", "ultralytics"} <= names
    assert not names & {"torch", "numpy", "pillow", "yolo-partial"}
    assert need["ultralytics"][1] == ["ultralytics"]


def test_install_bundle_unpacks_only_when_a_module_is_missing(tmp_path):
    bundle = tmp_path / "b"
    site = tmp_path / "src" / "site" / "gpu_check_fake_mod"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("X = 1\n")
    bundle.mkdir()
    with tarfile.open(bundle / "site.tar.xz", "w:xz") as t:
        t.add(tmp_path / "src" / "site", arcname="site")
    (bundle / "manifest.json").write_text(json.dumps({"modules": ["json"]}))
    assert gpu_check.install_bundle(bundle, tmp_path / "w1") is None  # everything there: nothing unpacked
    (bundle / "manifest.json").write_text(json.dumps({"modules": ["json", "gpu_check_fake_mod"]}))
    got = gpu_check.install_bundle(bundle, tmp_path / "w2")
    assert (got / "gpu_check_fake_mod" / "__init__.py").is_file()
    assert importlib.util.find_spec("gpu_check_fake_mod") is None  # not put on this process's path


@pytest.mark.skipif(not AQUARIUM.is_dir(), reason="../shared/datasets/aquarium not present")
def test_gather_data_scales_images_and_keeps_labels(tmp_path):
    from PIL import Image

    tar = tmp_path / "a.tar"
    counts = gpu_check.gather_data(AQUARIUM, tar, (3, 2))
    assert counts == {"train": 3, "val": 2}
    with tarfile.open(tar) as t:
        t.extractall(tmp_path)
    ims = sorted((tmp_path / "aquarium" / "images" / "train").iterdir())
    assert len(ims) == 3 and all(max(Image.open(p).size) <= gpu_check.MAX_SIDE for p in ims)
    src = sorted((AQUARIUM / "images" / "train").iterdir())[0]
    assert (tmp_path / "aquarium" / "labels" / "train" / f"{src.stem}.txt").read_text() == \
        (AQUARIUM / "labels" / "train" / f"{src.stem}.txt").read_text()
    assert "names:" in (tmp_path / "aquarium" / "data.yaml").read_text()
