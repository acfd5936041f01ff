"""The package as users install it: a wheel, run from a folder outside the clone, finds its shipped YAMLs by name.

The wheel is unpacked into a temporary target and run with `python -S` and only that target and the dependencies'
site-packages on PYTHONPATH, so neither the source tree nor the editable install's finder can stand in for it.
"""

import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

TIMEOUT = 600
TEST_ONLY = {"pytest", "pycocotools"}  # in requirements.txt for the tests, not needed by the package


@pytest.fixture(scope="module")
def wheel_target(tmp_path_factory) -> Path:
    """The wheel built from this checkout, unpacked into an import folder."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, timeout=TIMEOUT)
    wheel = next(out.glob("yolo_partial-*.whl"))
    target = out / "target"
    zipfile.ZipFile(wheel).extractall(target)
    return target


def _run(target: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """`yolo-partial ARGV` from the unpacked wheel in cwd, the clone not importable."""
    site = sysconfig.get_paths()["purelib"]
    code = "import sys; from yolo_partial.cli import main; import yolo_partial; print('FROM', yolo_partial.__file__); " \
           "sys.exit(main(sys.argv[1:]))"
    env = {"PYTHONPATH": f"{target}:{site}", "HOME": str(cwd), "YOLO_CONFIG_DIR": str(cwd / "cfgdir"),
           "YOLO_PARTIAL_CACHE": str(cwd / "cache"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-S", "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def test_wheel_ships_every_yaml(wheel_target):
    shipped = {p.relative_to(wheel_target / "yolo_partial" / "assets").as_posix()
               for p in (wheel_target / "yolo_partial" / "assets").rglob("*.yaml")}
    in_repo = {f"cfg/{p.relative_to(REPO / 'cfg').as_posix()}" for p in (REPO / "cfg").rglob("*.yaml")}
    in_repo |= {f"data/{p.name}" for p in (REPO / "data").glob("*.yaml")}
    assert shipped == in_repo and "cfg/models/yolov5n-obj.yaml" in shipped and "data/dusia.yaml" in shipped


def test_wheel_dependencies_pinned_as_requirements(wheel_target):
    req = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            req[name.lower()] = version
    deps = dict(d.lower().split("==") for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert {k: v for k, v in req.items() if k not in TEST_ONLY} == deps
    for needed in ("onnx", "onnxslim", "onnxruntime", "cloudpickle", "matplotlib", "tabulate"):
        assert needed in deps
    meta = next(wheel_target.glob("*.dist-info")) / "METADATA"
    assert set(re.findall(r"^Requires-Dist: (\S+)", meta.read_text(), re.M)) == {f"{k}=={v}" for k, v in deps.items()}


def test_train_shipped_cfg_by_name_outside_clone(wheel_target, tmp_path):
    r = _run(wheel_target, tmp_path, "train", "cfg=bpr_obj.yaml", "epochs=1", "imgsz=64", "batch=16", "fraction=0.05",
             "workers=0", "plots=False", "val=False", f"project={tmp_path / 'runs'}", "name=bpr")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"FROM {wheel_target}" in r.stdout
    csv = (tmp_path / "runs" / "bpr" / "results.csv").read_text()
    assert "train/obj_drop" in csv.splitlines()[0]


def test_train_shipped_model_by_name_outside_clone(wheel_target, tmp_path):
    r = _run(wheel_target, tmp_path, "train", "model=yolov5n-obj.yaml", "epochs=1", "imgsz=64", "batch=16",
             "fraction=0.05", "workers=0", "plots=False", "val=False", f"project={tmp_path / 'runs'}", "name=obj")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "runs" / "obj" / "weights" / "last.pt").is_file()


def test_dusia_by_name_says_how_to_obtain_frames(wheel_target, tmp_path):
    r = _run(wheel_target, tmp_path, "train", "cfg=brl.yaml", "data=dusia.yaml", f"project={tmp_path / 'runs'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "DUSIA frames are not there" in last and "yolo-partial convert dusia annotations=" in last
    assert "videos=" in last and "out=" in last
    assert not (tmp_path / "runs").exists()
