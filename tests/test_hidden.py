"""Tests of hidden-object recall (yolo_partial.hidden): box matching, manifests, and recall end to end."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo_partial import shapes
from yolo_partial.errors import PartialDataError
from yolo_partial.hidden import (best_scores, find_manifest, format_recall, hidden_recall, load_manifest,
                                 MANIFEST_FORMAT)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Partial YAML of a tiny generated shapes dataset (160 px square images)."""
    return shapes.generate(tmp_path_factory.mktemp("hidden") / "shapes", n_train=12, n_val=4)


def _box(cls, cx, cy, w, h, score=None) -> list:
    return [cls, cx, cy, w, h] + ([] if score is None else [score])


def _read_boxes(path: Path) -> np.ndarray:
    """A YOLO label file -> (n, 5) array, read independently of the module under test."""
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()]).reshape(-1, 5)


# best_scores ---------------------------------------------------------------------------------------------------------

def test_best_scores_class_and_iou_threshold():
    hidden = np.array([_box(0, 0.5, 0.5, 0.2, 0.2)])
    # A shift of d along x gives IoU (w - d) / (w + d): 0.538 for d = 0.06, 0.481 for d = 0.07.
    assert best_scores(hidden, np.array([_box(0, 0.5, 0.5, 0.2, 0.2, 0.8)])).tolist() == pytest.approx([0.8])
    assert best_scores(hidden, np.array([_box(1, 0.5, 0.5, 0.2, 0.2, 0.8)])).tolist() == [0.0]
    assert best_scores(hidden, np.array([_box(0, 0.56, 0.5, 0.2, 0.2, 0.7)])).tolist() == pytest.approx([0.7])
    assert best_scores(hidden, np.array([_box(0, 0.57, 0.5, 0.2, 0.2, 0.7)])).tolist() == [0.0]
    assert best_scores(hidden, np.array([_box(0, 0.57, 0.5, 0.2, 0.2, 0.7)]), iou=0.45).tolist() == pytest.approx([0.7])


def test_best_scores_takes_max_of_matching_predictions():
    hidden = np.array([_box(2, 0.3, 0.3, 0.1, 0.1), _box(2, 0.8, 0.8, 0.2, 0.1), _box(0, 0.1, 0.9, 0.05, 0.05)])
    preds = np.array([
        _box(2, 0.3, 0.3, 0.1, 0.1, 0.4),
        _box(2, 0.305, 0.3, 0.1, 0.1, 0.6),  # also matches box 0: the higher score wins
        _box(1, 0.3, 0.3, 0.1, 0.1, 0.95),  # other class: ignored
        _box(2, 0.5, 0.5, 0.1, 0.1, 0.99),  # no overlap: ignored
        _box(2, 0.8, 0.8, 0.2, 0.1, 0.3),
    ])
    assert best_scores(hidden, preds).tolist() == pytest.approx([0.6, 0.3, 0.0])


def test_best_scores_empty_and_torch():
    hidden = np.array([_box(0, 0.5, 0.5, 0.2, 0.2), _box(1, 0.2, 0.2, 0.1, 0.1)])
    out = best_scores(hidden, np.zeros((0, 6)))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.tolist() == [0.0, 0.0]
    assert best_scores(np.zeros((0, 5)), np.array([_box(0, 0.5, 0.5, 0.2, 0.2, 0.9)])).shape == (0,)
    t = best_scores(torch.tensor(hidden), torch.tensor([_box(1, 0.2, 0.2, 0.1, 0.1, 0.5)]))
    assert isinstance(t, torch.Tensor) and t.tolist() == pytest.approx([0.0, 0.5])


# manifests -----------------------------------------------------------------------------------------------------------

def _write_manifest(path: Path, removed: list, root: str = ".", **extra) -> Path:
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "source": "test", "mode": "easy", "seed": 0, "root": root,
                                "summary": {}, "removed": removed, **extra}))
    return path


@pytest.mark.parametrize("content, expected", [
    (None, "not found"),
    ("{not json", "unreadable manifest"),
    ({"format": "something/2", "removed": []}, "'something/2': expected 'yolo-partial-manifest/1'"),
    ([1, 2], "format None"),
    ({"format": MANIFEST_FORMAT}, "'removed' is missing"),
    ({"format": MANIFEST_FORMAT, "removed": [{"image": "a.jpg", "cls": 0}]}, r"removed\[0\] lacks one of"),
    ({"format": MANIFEST_FORMAT, "removed": [{"image": "a.jpg", "cls": 0, "box": [0.1, 0.1, 0.1, 0.1]},
                                             {"image": "a.jpg", "cls": 0, "box": [0.5, 0.5, 0.1]}]},
     r"removed\[1\] has box \[0.5, 0.5, 0.1\], not 4 numbers in \[0, 1\]"),
    ({"format": MANIFEST_FORMAT, "removed": [{"image": "a.jpg", "cls": 0, "box": [0.5, 0.5, 1.5, 0.1]}]},
     "not 4 numbers in"),
    ({"format": MANIFEST_FORMAT, "removed": [{"image": "a.jpg", "cls": 0, "box": [0.5, "x", 0.1, 0.1]}]},
     "not 4 numbers in"),
    ({"format": MANIFEST_FORMAT, "removed": [{"image": "a.jpg", "cls": -1, "box": [0.5, 0.5, 0.1, 0.1]}]},
     "not an integer >= 0"),
])
def test_load_manifest_errors(tmp_path, content, expected):
    path = tmp_path / "hidden.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(PartialDataError, match=expected) as e:
        load_manifest(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_manifest_keys_and_for_image(tmp_path, monkeypatch):
    for d in ("ds", "images/train"):
        (tmp_path / d).mkdir(parents=True)
    path = _write_manifest(tmp_path / "ds" / "hidden.json", [
        {"image": "images/train/a.jpg", "cls": 1, "box": [0.5, 0.5, 0.2, 0.2]},
        {"image": "images/train/b.jpg", "cls": 0, "box": [0.1, 0.2, 0.05, 0.1]},
        {"image": "./images/../images/train/a.jpg", "cls": 3, "box": [0.2, 0.3, 0.1, 0.1]},
    ], root="..", summary={"per_class": {"cat": {}, "dog": {}, "cow": {}, "ox": {}}})
    m = load_manifest(path)
    assert m.path == path and m.root == tmp_path and m.names == ["cat", "dog", "cow", "ox"]
    assert m.n_boxes == 3 and sorted(m.boxes) == [str(tmp_path / "images/train/a.jpg"),
                                                   str(tmp_path / "images/train/b.jpg")]
    expected_a = np.array([[1, 0.5, 0.5, 0.2, 0.2], [3, 0.2, 0.3, 0.1, 0.1]], np.float32)
    assert m.for_image(tmp_path / "images/train/a.jpg").dtype == np.float32
    np.testing.assert_array_equal(m.for_image(str(tmp_path / "images/train/a.jpg")), expected_a)
    monkeypatch.chdir(tmp_path / "ds")
    np.testing.assert_array_equal(m.for_image("./../images/./train/a.jpg"), expected_a)
    monkeypatch.chdir(tmp_path / "images")
    np.testing.assert_array_equal(m.for_image("train/b.jpg"), np.array([[0, 0.1, 0.2, 0.05, 0.1]], np.float32))
    assert m.for_image("train/c.jpg").shape == (0, 5)


def test_manifest_keeps_symlinks(tmp_path):
    """Split outputs link images to their source: keys use the link's own path, not its target."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(b"")
    (tmp_path / "out" / "images").mkdir(parents=True)
    os.symlink(tmp_path / "src" / "a.jpg", tmp_path / "out" / "images" / "a.jpg")
    m = load_manifest(_write_manifest(tmp_path / "out" / "hidden.json",
                                      [{"image": "images/a.jpg", "cls": 0, "box": [0.5, 0.5, 0.2, 0.2]}]))
    assert list(m.boxes) == [str(tmp_path / "out" / "images" / "a.jpg")] and m.names is None


def test_find_manifest(tmp_path, dataset):
    assert find_manifest(dataset) == dataset.parent / "hidden.json"
    assert find_manifest(dataset.parent / "full.yaml") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: images/train\nval: images/val\nhidden: gone.json\n")
    with pytest.raises(PartialDataError, match="hidden: gone.json not found") as e:
        find_manifest(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_find_manifest_is_relative_to_the_dataset_path(tmp_path):
    """As in data/voc-hard.yaml: the YAML lives elsewhere, `hidden:` is inside the dataset folder that `path:` names."""
    ds = tmp_path / "datasets" / "voc-hard"
    ds.mkdir(parents=True)
    (ds / "hidden.json").write_text("{}")
    shipped = tmp_path / "repo" / "data" / "voc-hard.yaml"
    shipped.parent.mkdir(parents=True)
    shipped.write_text(f"path: {ds}\ntrain: images/train\nval: images/val\nhidden: hidden.json\n")
    assert find_manifest(shipped) == ds / "hidden.json"


# hidden_recall -------------------------------------------------------------------------------------------------------

class FakeModel:
    """Stands in for an Ultralytics YOLO: predicts, for each image, the boxes that boxes_for(im_file) returns.

    boxes_for gives (n, 6) [cls, cx, cy, w, h, score] normalised; they are returned as real Ultralytics Results in
    pixels of the image, so the test also covers the mapping back to normalised coordinates.
    """

    names = {i: f"class{i}" for i in range(10)}

    def __init__(self, boxes_for):
        self.boxes_for, self.calls = boxes_for, []

    def predict(self, source, **kwargs):
        from ultralytics.engine.results import Results

        self.calls.append((list(source), kwargs))
        for im_file in source:
            img = cv2.imread(str(im_file))
            h, w = img.shape[:2]
            b = np.asarray(self.boxes_for(im_file), np.float32).reshape(-1, 6)
            xyxy = np.stack([(b[:, 1] - b[:, 3] / 2) * w, (b[:, 2] - b[:, 4] / 2) * h,
                             (b[:, 1] + b[:, 3] / 2) * w, (b[:, 2] + b[:, 4] / 2) * h], 1)
            data = torch.tensor(np.concatenate([xyxy, b[:, 5:6], b[:, :1]], 1))
            yield Results(img, path=str(im_file), names=self.names, boxes=data)


def _hidden_entries(dataset: Path) -> dict[str, np.ndarray]:
    """{absolute image path: (n, 5) hidden boxes}, parsed straight from hidden.json."""
    raw = json.loads((dataset.parent / "hidden.json").read_text())
    out = {}
    for e in raw["removed"]:
        key = str(dataset.parent / raw["root"] / e["image"])
        out[key] = np.vstack([out.get(key, np.zeros((0, 5))), [[e["cls"], *e["box"]]]])
    return out


def _labels_of(im_file) -> np.ndarray:
    return _read_boxes(Path(str(im_file).replace("/images/", "/labels/")).with_suffix(".txt"))


def _with_score(boxes: np.ndarray, score: float) -> np.ndarray:
    return np.hstack([boxes, np.full((len(boxes), 1), score)])


def test_hidden_recall_exact_predictions(dataset):
    hidden = _hidden_entries(dataset)
    manifest = load_manifest(find_manifest(dataset))
    model = FakeModel(lambda f: np.vstack([_with_score(hidden[f], 0.9), _with_score(_labels_of(f), 0.6)]))
    r = hidden_recall(model, manifest, batch=4)
    n_labelled = sum(len(_labels_of(f)) for f in hidden)
    assert (r["images"], r["hidden_boxes"], r["labelled_boxes"]) == (len(hidden), manifest.n_boxes, n_labelled)
    assert r["hidden_boxes"] == json.loads((dataset.parent / "hidden.json").read_text())["summary"]["removed"]
    assert r["hidden_recall"] == 1.0 and r["hidden_score"] == pytest.approx(0.9, abs=1e-6)
    assert r["labelled_recall"] == 1.0
    summary = manifest.summary["per_class"]
    assert r["per_class"] == {name: {"hidden": row["removed"], "recall": 1.0, "score": pytest.approx(0.9, abs=1e-6)}
                              for name, row in summary.items() if row["removed"]}
    # chunks of `batch` images in sorted order, predicted with a low threshold so mean scores see weak detections
    files = sorted(hidden)
    assert [src for src, _ in model.calls] == [files[i:i + 4] for i in range(0, len(files), 4)]
    kwargs = model.calls[0][1]
    assert (kwargs["stream"], kwargs["verbose"], kwargs["conf"], kwargs["max_det"]) == (True, False, 0.001, 300)


def test_hidden_recall_shifted_and_weak_predictions(dataset):
    hidden = _hidden_entries(dataset)
    manifest = load_manifest(find_manifest(dataset))

    def shifted(f):
        boxes = _with_score(hidden[f], 0.9)
        boxes[:, 1] += boxes[:, 3] / 2  # IoU 1/3 with the hidden box
        return boxes

    r = hidden_recall(FakeModel(shifted), manifest)
    assert (r["hidden_recall"], r["hidden_score"], r["labelled_recall"]) == (0.0, 0.0, 0.0)
    # Found at IoU 0.3; scores below conf count in the mean but not in the recall.
    assert hidden_recall(FakeModel(shifted), manifest, iou=0.3)["hidden_recall"] == 1.0
    weak = hidden_recall(FakeModel(lambda f: _with_score(hidden[f], 0.2)), manifest)
    assert weak["hidden_recall"] == 0.0 and weak["hidden_score"] == pytest.approx(0.2, abs=1e-6)
    assert hidden_recall(FakeModel(lambda f: _with_score(hidden[f], 0.2)), manifest, conf=0.2)["hidden_recall"] == 1.0
    # labelled boxes found, hidden ones suppressed: the pattern the measure is meant to reveal
    r = hidden_recall(FakeModel(lambda f: _with_score(_labels_of(f), 0.8)), manifest, max_images=5)
    assert (r["images"], r["hidden_recall"], r["labelled_recall"]) == (5, 0.0, 1.0)
    assert r["hidden_boxes"] == sum(len(hidden[f]) for f in sorted(hidden)[:5])


def test_hidden_recall_non_square_image(tmp_path):
    """Boxes map back to normalised coordinates of each axis separately (a 200 x 100 px image)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "wide.png"), np.zeros((100, 200, 3), np.uint8))
    (tmp_path / "labels" / "wide.txt").write_text("1 0.25 0.5 0.2 0.4\n")
    path = _write_manifest(tmp_path / "hidden.json",
                           [{"image": "images/wide.png", "cls": 0, "box": [0.7, 0.3, 0.3, 0.2]}])
    model = FakeModel(lambda f: [[0, 0.7, 0.3, 0.3, 0.2, 0.5], [1, 0.25, 0.5, 0.2, 0.4, 0.4]])
    r = hidden_recall(model, load_manifest(path))
    assert (r["images"], r["hidden_boxes"], r["hidden_recall"], r["labelled_boxes"], r["labelled_recall"]) == (
        1, 1, 1.0, 1, 1.0)
    assert r["hidden_score"] == pytest.approx(0.5) and list(r["per_class"]) == ["class0"]  # no names: the model's


def test_hidden_recall_missing_images(tmp_path):
    path = _write_manifest(tmp_path / "hidden.json", [
        {"image": f"images/{n}.jpg", "cls": 0, "box": [0.5, 0.5, 0.2, 0.2]} for n in ("b", "a", "c")])
    with pytest.raises(PartialDataError, match="3 of 3 images with hidden boxes not found") as e:
        hidden_recall(FakeModel(lambda f: []), load_manifest(path))
    assert str(tmp_path / "images" / "a.jpg") in str(e.value) and "\n" not in str(e.value)


def test_hidden_recall_real_model(dataset):
    """An untrained model whose class biases make it predict classes 0-5 everywhere, checked against an independent
    computation from the same Ultralytics predictions."""
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:
            branch[-1].bias[:6], branch[-1].bias[6:] = 0.0, -20.0  # scores near 0.5 for the 6 shapes classes
    manifest = load_manifest(find_manifest(dataset))
    r = hidden_recall(model, manifest, conf=0.3, iou=0.1, imgsz=96, batch=4)

    def iou(a, b):  # (n, 4), (m, 4) xyxy -> (n, m)
        lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
        inter = np.clip(rb - lt, 0, None).prod(2)
        return inter / ((a[:, 2:] - a[:, :2]).prod(1)[:, None] + (b[:, 2:] - b[:, :2]).prod(1)[None] - inter)

    def xyxy(b):
        return np.hstack([b[:, 1:3] - b[:, 3:5] / 2, b[:, 1:3] + b[:, 3:5] / 2])

    hidden = _hidden_entries(dataset)
    files = sorted(hidden)
    hidden_scores, labelled_scores = [], []
    for i in range(0, len(files), 4):
        for f, res in zip(files[i:i + 4], model.predict(files[i:i + 4], conf=0.001, imgsz=96, verbose=False)):
            cls, box, score = res.boxes.cls.numpy(), res.boxes.xyxyn.numpy(), res.boxes.conf.numpy()
            for boxes, out in ((hidden[f], hidden_scores), (_labels_of(f), labelled_scores)):
                ok = (iou(xyxy(boxes), box) >= 0.1) & (boxes[:, :1] == cls[None])
                out += np.where(ok, score[None], 0).max(1, initial=0).tolist()
    assert r["hidden_boxes"] == len(hidden_scores) and r["labelled_boxes"] == len(labelled_scores)
    assert r["hidden_score"] == pytest.approx(np.mean(hidden_scores), abs=1e-4) and r["hidden_score"] > 0
    assert r["hidden_recall"] == pytest.approx(np.mean(np.array(hidden_scores) >= 0.3))
    assert r["labelled_recall"] == pytest.approx(np.mean(np.array(labelled_scores) >= 0.3))


def test_hidden_recall_empty_manifest(tmp_path):
    r = hidden_recall(FakeModel(lambda f: []), load_manifest(_write_manifest(tmp_path / "hidden.json", [])))
    assert (r["images"], r["hidden_boxes"], r["labelled_boxes"], r["per_class"]) == (0, 0, 0, {})
    assert np.isnan(r["hidden_recall"]) and np.isnan(r["hidden_score"]) and np.isnan(r["labelled_recall"])
    assert format_recall(r).splitlines()[2].split() == ["all", "0", "0", "nan", "nan", "0", "nan"]


def test_format_recall():
    result = {"images": 11, "hidden_boxes": 24, "hidden_recall": 0.125, "hidden_score": 0.0833, "labelled_boxes": 30,
              "labelled_recall": 0.5, "conf": 0.25, "iou": 0.5,
              "per_class": {"red circle": {"hidden": 4, "recall": 0.25, "score": 0.1}}}
    lines = format_recall(result).splitlines()
    assert len(lines) == 4 and "IoU 0.5" in lines[0] and "score 0.25" in lines[0]
    assert lines[1].split() == ["Class", "Images", "Hidden", "Recall", "Score", "Labelled", "Recall"]
    assert lines[2].split() == ["all", "11", "24", "0.125", "0.0833", "30", "0.5"]
    assert lines[3].split() == ["red", "circle", "4", "0.25", "0.1"] and lines[3].startswith(" " * 12 + "red circle")
    assert len({len(line) for line in lines[1:3]}) == 1  # columns line up


def test_hidden_ap_ranks_predictions_against_hidden_boxes_leaving_labelled_ones_out():
    """A hand case: the detection on the labelled box is left out; the rest rank TP, FP, TP for class 0 and one FP of
    class 1 (no hidden box of class 1: not averaged). AP by an independent 101-point interpolation."""
    from yolo_partial.hidden import hidden_ap, hidden_hits

    hidden = np.array([[0, 0.2, 0.2, 0.1, 0.1], [0, 0.7, 0.7, 0.1, 0.1]], np.float32)
    labelled = np.array([[0, 0.5, 0.5, 0.1, 0.1]], np.float32)
    preds = np.array([[0, 0.5, 0.5, 0.1, 0.1, 0.9],  # on the labelled box: neither hit nor false alarm
                      [0, 0.2, 0.2, 0.1, 0.1, 0.8],  # hidden box 1
                      [0, 0.9, 0.1, 0.1, 0.1, 0.7],  # nothing there
                      [0, 0.2, 0.2, 0.1, 0.1, 0.65],  # hidden box 1 again: already taken, a false alarm
                      [0, 0.7, 0.71, 0.1, 0.1, 0.6],  # hidden box 2
                      [1, 0.7, 0.7, 0.1, 0.1, 0.95]], np.float32)  # wrong class
    rows = hidden_hits(hidden, labelled, preds)
    assert rows[:, 2].tolist() == [0, 1, 0, 0, 1] and len(rows) == 5
    tp = np.array([1, 0, 0, 1])  # class 0 in score order
    prec, rec = np.cumsum(tp) / np.arange(1, 5), np.cumsum(tp) / 2
    # the AP Ultralytics reports: precision envelope with sentinels, interpolated at 101 recalls, trapezoidal area
    mrec, mpre = np.r_[0, rec, 1], np.r_[1, prec, 0]
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    x = np.linspace(0, 1, 101)
    expected = float(np.sum((x[1:] - x[:-1]) * (np.interp(x, mrec, mpre)[1:] + np.interp(x, mrec, mpre)[:-1]) / 2))
    assert hidden_ap(rows, hidden[:, 0].astype(int)) == pytest.approx(expected, abs=1e-6)
