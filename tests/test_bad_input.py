"""The bad-input matrix: each kind of bad input has one defined outcome, a one-line error (exit status 2, the file or
key named, no traceback) or training that goes on with the problem counted in a log line.

Rows tested elsewhere: NaN/inf coordinates, a class id >= nc, wrong field counts and coordinates outside [0, 1] in a
label file (test_cli.py::test_malformed_label_names_the_file), YAML syntax errors in a cfg file and a missing cfg file
(test_cli.py::test_bad_cfg_file).
"""

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error
from yolo_partial.patches import label_cache_path
from yolo_partial.cli import main

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root ignores permission bits: the OS error is simulated


def train_argv(data, tmp_path, *extra):
    return ["train", f"data={data}", "model=yolov8n.yaml", "epochs=1", "imgsz=64", "batch=2", "workers=0",
            "plots=False", f"project={tmp_path / 'runs'}", "name=bad", *extra]  # fmt: skip


def train_images(data: Path) -> list[Path]:
    return sorted((data.parent / "images" / "train").iterdir())


def label_of(image: Path) -> Path:
    return image.parent.parent.parent / "labels" / image.parent.name / f"{image.stem}.txt"


@pytest.mark.parametrize(
    "kind, reason",
    [("garbage", "not an image format Pillow recognises"), ("empty", "empty file (0 bytes)"),
     ("truncated", "corrupt image data (image file is truncated")],  # fmt: skip
)
def test_corrupt_image_is_a_one_line_error(aquarium_copy, tmp_path, capsys, kind, reason):
    image = train_images(aquarium_copy)[2]
    data = image.read_bytes()
    image.write_bytes({"garbage": b"not an image " * 20, "empty": b"", "truncated": data[: len(data) // 2]}[kind])
    line = one_line_error(capsys, *train_argv(aquarium_copy, tmp_path))
    assert line.startswith(f"yolo-partial train: error: {image}: rejected image: {reason}"), line
    assert not (tmp_path / "runs" / "bad").exists()  # a run that fails before its first epoch leaves nothing


def test_labels_beyond_the_yaml_nc_name_the_label_file_and_the_yaml(aquarium_copy, tmp_path, capsys):
    """Labels written for a longer class list than the data YAML's: every file using class 1 with `names: [fish]`."""
    yaml = aquarium_copy.parent / "fish.yaml"
    yaml.write_text(aquarium_copy.read_text().split("names:")[0] + "names: [fish]\n")
    images = train_images(aquarium_copy)
    for im in images[1:3]:
        rows = label_of(im).read_text().splitlines()
        label_of(im).write_text("\n".join([*rows[:1], "1" + rows[1][1:], *rows[2:]]) + "\n")  # line 2: class 1
    line = one_line_error(capsys, *train_argv(yaml, tmp_path))
    assert line == (f"yolo-partial train: error: {label_of(images[1])}: malformed labels: line 2 has class 1, outside "
                    f"[0, 1); expected lines 'class cx cy w h' with an integer class in [0, nc) and coordinates in "
                    f"[0, 1] (nc=1 from {yaml}) (1 more files rejected)")  # fmt: skip


def test_empty_class_list_is_a_one_line_error(aquarium_copy, tmp_path, capsys):
    yaml = aquarium_copy.parent / "none.yaml"
    yaml.write_text(aquarium_copy.read_text().split("names:")[0] + "names: []\n")
    line = one_line_error(capsys, *train_argv(yaml, tmp_path))
    assert line == f"yolo-partial train: error: {yaml}: 'names' is empty: expected at least one class"


def test_nc_disagreeing_with_names_is_a_one_line_error(aquarium_copy, tmp_path, capsys):
    yaml = aquarium_copy.parent / "nc.yaml"
    yaml.write_text(aquarium_copy.read_text() + "nc: 5\n")
    line = one_line_error(capsys, *train_argv(yaml, tmp_path))
    assert line == f"yolo-partial train: error: {yaml}: nc: 5 but 'names' lists 7 classes: expected them to agree (or no nc)"
    assert not (tmp_path / "runs").exists()  # caught before anything is written


@pytest.mark.parametrize("kind", ["no-permission", "not-utf8", "not-a-mapping"])
def test_unreadable_cfg_file_is_a_one_line_error(tmp_path, capsys, monkeypatch, kind):
    cfg = tmp_path / "cfg.yaml"
    if kind == "no-permission":
        cfg.write_text("epochs: 1\n")
        cfg.chmod(0)
        if AS_ROOT:
            read_text = Path.read_text

            def denied(self, *args, **kwargs):
                if self == cfg:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
                return read_text(self, *args, **kwargs)

            monkeypatch.setattr(Path, "read_text", denied)
        expect = f"{cfg}: cannot read cfg file (Permission denied): expected a readable file"
    elif kind == "not-utf8":
        cfg.write_bytes(b"epochs: \xff\xfe\x00\x01\n")
        expect = f"{cfg}: unreadable cfg file: expected a YAML mapping of key: value"
    else:
        cfg.write_text("- epochs\n- 1\n")
        expect = f"{cfg}: expected a YAML mapping of key: value, got list"
    assert one_line_error(capsys, "train", f"cfg={cfg}") == f"yolo-partial train: error: {expect}"


@pytest.mark.parametrize("kind", ["read-only", "file-in-the-way"])
def test_unwritable_output_folder_is_a_one_line_error(aquarium_small, tmp_path, capsys, monkeypatch, kind):
    """project= names a read-only folder, or a path under a regular file: the run folder cannot be created."""
    if kind == "read-only":
        project = tmp_path / "ro"
        project.mkdir(mode=0o555)
        reason = "Permission denied"
        if AS_ROOT:
            mkdir = os.mkdir

            def denied(path, *args, **kwargs):
                if Path(path).parent == project:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return mkdir(path, *args, **kwargs)

            monkeypatch.setattr(os, "mkdir", denied)
    else:
        (tmp_path / "file").write_text("")
        project = tmp_path / "file" / "runs"
        reason = "Not a directory"
    argv = [a for a in train_argv(aquarium_small, tmp_path) if not a.startswith("project=")]
    line = one_line_error(capsys, *argv, f"project={project}")
    assert line == (f"yolo-partial train: error: cannot create the run folder {project / 'bad'} ({reason}): expected "
                    f"project= to name a writable folder")  # fmt: skip
    if kind == "read-only":
        assert list(project.iterdir()) == []


@pytest.fixture(scope="module")
def repairable_run(tmp_path_factory):
    """One CLI training run on a copy of Aquarium with an empty label file, a missing label file, two zero-area boxes
    and a JPEG with bytes after its end marker -> (trainer, log messages, images, data YAML, boxes to keep per file)."""
    from conftest import AQUARIUM, copy_subset
    from ultralytics.utils import LOGGER, callbacks

    if not AQUARIUM.is_dir():
        pytest.skip("../shared/datasets/aquarium not present")
    root = tmp_path_factory.mktemp("repairable")
    data = copy_subset(AQUARIUM, root / "aq", 6, 2)
    images = train_images(data)
    label_of(images[0]).write_text("")  # empty label file
    label_of(images[1]).unlink()  # no label file
    kept = {}  # boxes that must survive in the files given a zero-area box
    for im, box in zip(images[2:4], ("0 0.5 0.5 0 0.1", "1 0.3 0.3 0.1 0")):  # zero width, zero height
        lines = {ln.strip() for ln in label_of(im).read_text().splitlines() if ln.strip()}  # Ultralytics dedupes
        kept[im.name] = len(lines)
        label_of(im).write_text("\n".join([*lines, box]) + "\n")
    images[4].write_bytes(images[4].read_bytes() + b"trailing bytes")  # a JPEG not ending with its end marker

    messages, seen = [], []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    LOGGER.addHandler(handler)
    default = callbacks.base.default_callbacks
    on_train_end = default["on_train_end"]
    default["on_train_end"] = [*on_train_end, seen.append]
    try:
        assert main(train_argv(data, root)) == 0
    finally:
        LOGGER.removeHandler(handler)
        default["on_train_end"] = on_train_end
    return seen[0], messages, images, data, kept


def test_empty_and_missing_label_files_train_as_background_images(repairable_run):
    """A YOLO image without labels is a negative image: kept and trained on, counted as a 'background' by the scan."""
    from ultralytics.data.utils import load_dataset_cache_file

    trainer, _, images, data, _ = repairable_run
    dataset = trainer.train_loader.dataset
    boxes = {Path(lb["im_file"]).name: len(lb["bboxes"]) for lb in dataset.labels}
    assert len(boxes) == 6 and boxes[images[0].name] == 0 and boxes[images[1].name] == 0
    assert not (data.parent / "labels" / "train.cache").exists()  # never written into the dataset
    nf, nm, ne, nc, n = load_dataset_cache_file(label_cache_path(data.parent / "labels" / "train.cache"))["results"]
    assert (nm, ne, nc, n) == (1, 1, 0, 6)  # shown as "6 images, 2 backgrounds, 0 corrupt"


def test_zero_area_boxes_are_dropped_with_a_counted_warning(repairable_run):
    trainer, messages, images, _, kept = repairable_run
    warned = [m.split("WARNING ⚠️ ")[-1] for m in messages if "zero-area label boxes" in m]
    assert warned == [f"2 zero-area label boxes (width or height 0) in 2 label files ignored, the objects count as "
                      f"unlabelled; first in {label_of(images[2])}"]  # fmt: skip
    boxes = {Path(lb["im_file"]).name: lb["bboxes"] for lb in trainer.train_loader.dataset.labels}
    assert all((b[:, 2:] > 0).all() for b in boxes.values())
    assert {name: len(boxes[name]) for name in kept} == kept  # every other box of those files is still there
    assert np.isfinite(float(trainer.loss.detach()))


def test_jpeg_without_end_marker_is_restored_by_ultralytics(repairable_run):
    """Ultralytics re-encodes such a JPEG in place (a new file swapped in, so hard links keep the original) and
    says so; the image trains."""
    trainer, messages, images, _, _ = repairable_run
    assert any(f"{images[4]}: corrupt JPEG restored and saved" in m for m in messages)
    assert images[4].read_bytes()[-2:] == b"\xff\xd9"
    assert str(images[4]) in trainer.train_loader.dataset.im_files


def test_val_into_an_unwritable_folder_is_a_one_line_error(aquarium_small, tmp_path, capsys):
    from ultralytics import YOLO

    model = tmp_path / "m.pt"
    YOLO("yolov8n.yaml").save(model)
    (tmp_path / "file").write_text("")
    line = one_line_error(capsys, "val", f"model={model}", f"data={aquarium_small}", "imgsz=64",
                          f"project={tmp_path / 'file' / 'runs'}")  # fmt: skip
    assert line.startswith("yolo-partial val: error: ") and "Not a directory" in line
