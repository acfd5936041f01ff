"""Every bad input a defined outcome, table-driven: each row is a command that must exit with status 2, end in one
line holding the expected words, print no traceback anywhere, and leave the source dataset and the runs folder exactly
as they were (a listing of names, sizes and mtimes before and after)."""

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from ultralytics.utils import LOGGER

from conftest import AQUARIUM, REPO, copy_subset
from yolo_partial.cli import main

TINY = ["epochs=1", "imgsz=64", "batch=4", "workers=0", "plots=False", "val=False"]


def listing(*roots: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime_ns)} of every file and folder under roots (a missing root lists as nothing)."""
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")] if root.exists() else []:
            st = p.lstat()
            out[str(p)] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A source dataset, a finished tiny run, and the bad files the rows use."""
    if not AQUARIUM.is_dir():
        pytest.skip("../shared/datasets/aquarium not present")
    tmp = tmp_path_factory.mktemp("matrix")
    data = copy_subset(AQUARIUM, tmp / "src", 8, 4)
    runs = tmp / "runs"
    log, handler = [], logging.Handler()
    handler.emit = lambda r: log.append(r.getMessage())
    LOGGER.addHandler(handler)
    try:
        assert main(["train", f"data={data}", "model=yolov8n.yaml", *TINY, f"project={runs}", "name=done"]) == 0
    finally:
        LOGGER.removeHandler(handler)
    finished = runs / "done" / "weights" / "last.pt"
    bad = tmp / "bad"
    bad.mkdir()
    (bad / "text.pt").write_text("not a checkpoint\n")
    (bad / "empty.pt").write_bytes(b"")
    (bad / "truncated.pt").write_bytes(finished.read_bytes()[: finished.stat().st_size // 2])
    torch.save({"a": 1}, bad / "dict.pt")
    (bad / "folder.pt").mkdir()
    other = tmp / "other"  # a manifest written for another dataset (its own images, which exist)
    copy_subset(AQUARIUM, other, 2, 1)
    im = sorted((other / "images" / "train").iterdir())[0]
    (other / "hidden.json").write_text(json.dumps({"format": "yolo-partial-manifest/1", "removed": [
        {"image": f"images/train/{im.name}", "cls": 0, "box": [0.5, 0.5, 0.2, 0.2]}]}))
    return {"data": data, "runs": runs, "finished": finished, "bad": bad, "tmp": tmp, "other": other, "log": log}


@dataclass
class Row:
    name: str
    argv: Callable[[dict], list[str]]
    words: tuple[str, ...]


def _models(w):
    return {k: str(w["bad"] / f"{k}.pt") for k in ("text", "empty", "truncated", "dict", "folder")}


WORDS = {"text": "not a PyTorch checkpoint", "empty": "empty file (0 bytes)", "truncated": "not a PyTorch checkpoint",
         "dict": "not a usable Ultralytics checkpoint", "folder": "is a folder: expected a .pt checkpoint"}
ROWS = [
    *(Row(f"{mode}-{kind}", (lambda w, mode=mode, kind=kind: {
        "train": ["train", f"model={_models(w)[kind]}", f"data={w['data']}", *TINY, f"project={w['runs']}"],
        "val": ["val", f"model={_models(w)[kind]}", f"data={w['data']}", f"project={w['runs']}"],
        "predict": ["predict", f"model={_models(w)[kind]}", f"source={w['data'].parent / 'images' / 'val'}",
                    f"project={w['runs']}"],
        "export": ["export", f"model={_models(w)[kind]}", "format=onnx"],
        "resume": ["train", "resume=True", f"model={_models(w)[kind]}"],
    }[mode]), (WORDS[kind],))
      for mode in ("train", "val", "predict", "export", "resume") for kind in WORDS),
    Row("imgsz", lambda w: ["train", "imgsz=abc", f"data={w['data']}", f"project={w['runs']}"],
        ("imgsz='abc' is invalid: expected a positive integer",)),
    Row("data-txt", lambda w: ["train", f"data={next((w['data'].parent / 'labels' / 'train').iterdir())}",
                               f"project={w['runs']}"], ("is not a data YAML",)),
    Row("resume-finished", lambda w: ["train", "resume=True", f"model={w['finished']}"],
        ("is a finished run (1 epochs), nothing to resume",)),
    Row("offline-weights", lambda w: ["train", "model=yolov8n.pt", f"data={w['data']}", f"project={w['runs']}"],
        ("no weights are downloaded offline", "yolov8n.yaml")),
    Row("split-out", lambda w: ["split", f"data={w['data']}", "mode=hard", "out=/proc/yolo-partial-test"],
        ("out=/proc/yolo-partial-test cannot be written",)),
    Row("hidden-foreign", lambda w: ["val", f"model={w['finished']}", f"data={w['data']}",
                                     f"hidden={w['other'] / 'hidden.json'}", f"project={w['runs']}"],
        ("are not train images of", "expected the manifest written by split for this dataset")),
    Row("convert-no-kind", lambda w: ["convert"], ("convert needs a dataset kind",)),
    Row("dusia-not-there", lambda w: ["train", "cfg=brl.yaml", "data=dusia.yaml", f"project={w['runs']}"],
        ("DUSIA frames are not there", "yolo-partial convert dusia annotations=")),
]
if not torch.cuda.is_available():
    ROWS.append(Row("device-0", lambda w: ["train", "device=0", f"data={w['data']}", f"project={w['runs']}"],
                    ("device=0 asks for a CUDA GPU",)))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_bad_input_row(world, row, capsys, monkeypatch):
    from ultralytics.utils import SETTINGS

    monkeypatch.setitem(SETTINGS, "runs_dir", str(world["runs"]))
    watched = (world["data"].parent, world["runs"], world["other"])
    before = listing(*watched)
    rc = main(row.argv(world))
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and lines, (rc, err[-2000:])
    assert "Traceback" not in out + err
    assert all(word in lines[-1] for word in row.words), lines[-1]
    assert listing(*watched) == before


def test_resume_without_model_and_no_run(tmp_path, capsys, monkeypatch):
    from ultralytics.utils import SETTINGS

    monkeypatch.setitem(SETTINGS, "runs_dir", str(tmp_path / "runs"))
    assert main(["train", "resume=True"]) == 2
    assert f"no run to resume (no last.pt under {tmp_path / 'runs'})" in capsys.readouterr().err


def test_resume_without_model_takes_the_latest_run(world, tmp_path, monkeypatch):
    """As `yolo train resume`: the newest last.pt under the runs folder (here an interrupted copy of the tiny run)."""
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.torch_utils import unwrap_model

    import yolo_partial.checkpoints as ck

    runs = tmp_path / "runs"
    shutil.copytree(world["runs"] / "done", runs / "detect" / "train")
    monkeypatch.setitem(SETTINGS, "runs_dir", str(runs))
    seen = []
    monkeypatch.setattr(ck, "load_model", lambda m, key="model": seen.append(str(m)) or _NoTrain(m))
    assert main(["train", "resume=True"]) == 2  # finished: refused, but it looked at the latest run
    assert seen == [str(runs / "detect" / "train" / "weights" / "last.pt")]
    del unwrap_model


class _NoTrain:
    def __init__(self, m):
        self.ckpt = {"epoch": -1, "optimizer": None, "train_args": {"epochs": 1}}


def test_help_into_a_closed_pipe_is_quiet():
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written, as with `yolo-partial -h | head -0`
    proc = subprocess.run([sys.executable, "-m", "yolo_partial.cli", "-h"], stdout=w, stderr=subprocess.PIPE, text=True,
                          cwd=REPO, timeout=120)
    os.close(w)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


@pytest.mark.parametrize("mode", ["split", "reproduce", "download", "val"])
def test_mode_help_prints_its_usage(mode, capsys):
    assert main([mode, "help"]) == 0
    assert capsys.readouterr().out.startswith(f"Usage: yolo-partial {mode} ")


def test_image_above_pillows_bomb_limit_is_one_line(world, tmp_path, capsys, monkeypatch):
    """Pillow refuses images over twice MAX_IMAGE_PIXELS (a 14000 x 14000 JPEG): one line with the size, no traceback.
    The limit is lowered here instead of writing a 600 MB image; the code path is the same."""
    from PIL import Image

    data = copy_subset(AQUARIUM, tmp_path / "aq", 4, 2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # the copied images have ~200k pixels: > 2x the limit
    line = _one_line(capsys, ["train", f"data={data}", *TINY, f"project={tmp_path / 'runs'}"])
    assert "rejected image: too large (" in line and "M-pixel limit that Pillow keeps against decompression bombs" in line
    assert not (tmp_path / "runs").exists()


def test_large_image_trains_with_one_warning_naming_it(world, tmp_path, monkeypatch):
    """Between Pillow's warning and refusal sizes (a 10000 x 10000 image): it trains, with one warning naming the file."""
    import logging

    from PIL import Image
    from ultralytics.utils import LOGGER

    data = copy_subset(AQUARIUM, tmp_path / "aq", 4, 2)
    sizes = sorted(Image.open(p).size[0] * Image.open(p).size[1] for p in (data.parent / "images" / "train").iterdir())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", sizes[0] - 1)  # under half their size: warned, not refused
    messages = []
    handler = logging.Handler()
    handler.emit = lambda r: messages.append(r.getMessage())
    LOGGER.addHandler(handler)
    try:
        assert main(["train", f"data={data}", *TINY, f"project={tmp_path / 'runs'}", "name=big"]) == 0
    finally:
        LOGGER.removeHandler(handler)
    warned = [m for m in messages if "images above" in m]
    assert len(warned) == 1 and f"{len(sizes)} images above" in warned[0] and "resize them once" in warned[0]
    assert str(data.parent / "images" / "train") in warned[0]


def test_split_and_training_on_it_leave_the_source_untouched(world, tmp_path):
    """Ultralytics would write labels/{train,val}.cache into the split's source (its val points there): no longer."""
    src = copy_subset(AQUARIUM, tmp_path / "src", 8, 4)
    before = listing(src.parent)
    assert main(["split", f"data={src}", "mode=hard", f"out={tmp_path / 'hard'}"]) == 0
    assert main(["train", f"data={tmp_path / 'hard' / 'data.yaml'}", *TINY[:-1], f"project={tmp_path / 'runs'}"]) == 0
    assert main(["val", f"model={tmp_path / 'runs' / 'train' / 'weights' / 'best.pt'}", f"data={src}",
                 f"project={tmp_path / 'runs'}"]) == 0
    assert listing(src.parent) == before
    assert not list(src.parent.rglob("*.cache")) and not list((tmp_path / "hard").rglob("*.cache"))


def test_failed_download_leaves_no_empty_folder(tmp_path, capsys, monkeypatch):
    from ultralytics.utils import SETTINGS

    monkeypatch.setitem(SETTINGS, "datasets_dir", str(tmp_path / "datasets"))
    (tmp_path / "datasets").mkdir()
    yaml = tmp_path / "net.yaml"
    yaml.write_text("path: net\ntrain: images/train\nval: images/val\nnames: [a]\ndownload: |\n"
                    "  from pathlib import Path\n  (Path(yaml['path']).parent / 'net-source' / 'sub').mkdir(parents=True)\n"
                    "  raise ConnectionError('offline')\n")
    line = _one_line(capsys, ["download", f"data={yaml}"])
    assert "download failed: ConnectionError: offline" in line
    assert list((tmp_path / "datasets").iterdir()) == []


def test_checkpoint_log_names_the_real_file(world):
    """The final strip is written through a temporary file; its log line names last.pt, not the temporary."""
    stripped = [m for m in world["log"] if "Optimizer stripped" in m]
    assert stripped and all(".tmp-" not in m for m in stripped)
    assert any(str(world["finished"]) in m for m in stripped)


def _one_line(capsys, argv) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and lines and "Traceback" not in out + err, err[-2000:]
    return lines[-1]
