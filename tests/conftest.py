"""Test environment: offline, hermetic Ultralytics settings, shared small datasets."""

import os
import shutil
import tempfile
from pathlib import Path

# Before Ultralytics is imported anywhere: it reads these at import time.
_HOME = Path(tempfile.mkdtemp(prefix="yolo-partial-tests-"))
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "False"
os.environ["YOLO_CONFIG_DIR"] = str(_HOME / "config")  # empty settings dir: no Arial.ttf, no weights
os.environ.setdefault("YOLO_PARTIAL_CACHE", str(_HOME / "cache"))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
AQUARIUM = SHARED / "aquarium"
AQUARIUM_NAMES = ["fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"]


def copy_subset(src: Path, dst: Path, n_train: int, n_val: int) -> Path:
    """Copy the first images of a YOLO-layout dataset (and their labels) into dst; return its data YAML."""
    for split, n in (("train", n_train), ("val", n_val)):
        (dst / "images" / split).mkdir(parents=True)
        (dst / "labels" / split).mkdir(parents=True)
        for im in sorted((src / "images" / split).iterdir())[:n]:
            shutil.copy(im, dst / "images" / split / im.name)
            lb = src / "labels" / split / f"{im.stem}.txt"
            if lb.exists():
                shutil.copy(lb, dst / "labels" / split / lb.name)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(AQUARIUM_NAMES))
    (dst / "data.yaml").write_text(f"path: {dst}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return dst / "data.yaml"


def train_args(**kw):
    """model.args for a loss built outside a trainer: Ultralytics' defaults, every method key's default, then kw."""
    from types import SimpleNamespace

    from ultralytics.utils import DEFAULT_CFG_DICT

    from yolo_partial.keys import METHOD_DEFAULTS

    return SimpleNamespace(**{**DEFAULT_CFG_DICT, **METHOD_DEFAULTS, **kw})


def train_models(heads, nc: int) -> dict:
    """{model YAML: a freshly initialised (seed 0) DetectionModel in train mode with train_args()} for each head."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    out = {}
    for yaml in heads:
        m = DetectionModel(yaml, nc=nc, verbose=False)
        m.args = train_args()
        out[yaml] = m.train()
    return out


def criterion(model, **kw):
    """The partial criterion of `model` with the method keys kw (the rest at their defaults)."""
    from yolo_partial.losses.criterion import partial_criterion

    model.args = train_args(**kw)
    return partial_criterion(model)


def one_line_error(capsys, *argv) -> str:
    """Run the CLI with argv; expect exit status 2, exactly one line on stderr and no traceback -> that line."""
    from yolo_partial.cli import main

    rc = main(list(argv))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same torch RNG state."""
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session")
def aquarium_small(tmp_path_factory) -> Path:
    """A handful of real Aquarium images (skips when ../shared is absent)."""
    if not AQUARIUM.is_dir():
        pytest.skip("../shared/datasets/aquarium not present")
    return copy_subset(AQUARIUM, tmp_path_factory.mktemp("aquarium"), 8, 4)


@pytest.fixture()
def aquarium_copy(tmp_path) -> Path:
    """A private, modifiable copy of a few Aquarium images, for bad-input tests."""
    if not AQUARIUM.is_dir():
        pytest.skip("../shared/datasets/aquarium not present")
    return copy_subset(AQUARIUM, tmp_path / "aq", 4, 2)
