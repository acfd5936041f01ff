"""Tests of the partial-aware validator (yolo_partial.partial_val) against an independent count, and a tiny end-to-end
train + val on a merged dataset (class-partial loss on, best.pt chosen by the partial-aware mAP)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from test_class_partial import _class_sources
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils.metrics import DetMetrics, ap_per_class

from yolo_partial import PartialDetectionTrainer, shapes
from yolo_partial.partial_labels import ImagePartial, load_partial, write_partial
from yolo_partial.partial_val import PARTIAL_MAP_KEYS, PartialDetectionValidator, ignore_in_frame

IMGSZ = 64
NAMES = {0: "a", 1: "b", 2: "c"}
# pixel boxes in a 64 x 64 frame (ratio_pad identity); image a.jpg labels class a, verifies c absent, ignores R
G1, G2, G3 = (4, 4, 20, 20), (30, 30, 50, 50), (4, 40, 20, 60)
R = (40, 40, 64, 64)
GTS = [(0, 0, G1), (1, 1, G2), (1, 2, G3)]  # image, class, box
DETS = [  # image, class, conf, box -> partial-aware fate / stock fate
    (0, 0, 0.8, G1),  # hit / hit
    (0, 0, 0.9, (44, 44, 60, 60)),  # inside the ignore box R, no GT: ignored / false alarm
    (0, 1, 0.95, (24, 4, 36, 16)),  # class b is not labelled in a.jpg: ignored / false alarm
    (0, 2, 0.7, (24, 24, 36, 36)),  # class c is verified absent: false alarm / false alarm
    (1, 1, 0.5, G2),  # hit / hit
    (1, 2, 0.6, G3),  # hit / hit
]
COUNTED = [(0, True), (3, False), (4, True), (5, True)]  # partial-aware: detections that count, and whether they hit


def _xywh(box):
    x1, y1, x2, y2 = box
    return [(x1 + x2) / 2 / IMGSZ, (y1 + y2) / 2 / IMGSZ, (x2 - x1) / IMGSZ, (y2 - y1) / IMGSZ]


def _validator(cls, tmp_path, **kw):
    from types import SimpleNamespace

    v = cls(save_dir=tmp_path, args={"imgsz": IMGSZ, "plots": False, "save_json": False}, **kw)
    v.training, v.device, v.data = True, torch.device("cpu"), {"val": ""}
    v.dataloader = SimpleNamespace(dataset=SimpleNamespace(im_files=[]))
    v.init_metrics(SimpleNamespace(names=NAMES, end2end=False))
    return v


def _feed(v, root):
    batch = {"img": torch.zeros(2, 3, IMGSZ, IMGSZ), "batch_idx": torch.tensor([float(i) for i, _, _ in GTS]),
             "cls": torch.tensor([[float(c)] for _, c, _ in GTS]), "bboxes": torch.tensor([_xywh(b) for *_, b in GTS]),
             "ori_shape": [(IMGSZ, IMGSZ)] * 2, "ratio_pad": [((1.0, 1.0), (0, 0))] * 2,
             "im_file": [str(root / "images" / "a.jpg"), str(root / "images" / "b.jpg")]}
    preds = []
    for i in range(2):
        d = [x for x in DETS if x[0] == i]
        preds.append({"bboxes": torch.tensor([list(map(float, x[3])) for x in d]), "conf": torch.tensor([x[2] for x in d]),
                      "cls": torch.tensor([float(x[1]) for x in d]), "extra": torch.zeros(len(d), 0)})
    v.update_metrics(preds, batch)
    return v.get_stats()


@pytest.fixture()
def partial_file(tmp_path):
    write_partial(tmp_path / "partial.json", {"images/a.jpg": ImagePartial({0}, {2}, [_xywh(R)])}, list(NAMES.values()))
    return load_partial(tmp_path / "partial.json", NAMES)


def test_partial_map_against_an_independent_count(partial_file, tmp_path):
    stock = _feed(_validator(DetectionValidator, tmp_path / "stock"), tmp_path)
    v = _validator(PartialDetectionValidator, tmp_path / "partial", partial=partial_file, enabled=True)
    got = _feed(v, tmp_path)
    # Ultralytics' own figures are untouched
    assert {k: got[k] for k in stock if k != "fitness"} == {k: v for k, v in stock.items() if k != "fitness"}
    # the independent count: the hand-picked detections that count, through Ultralytics' ap_per_class
    tp = np.array([[hit] * 10 for _, hit in COUNTED])
    conf = np.array([DETS[i][2] for i, _ in COUNTED])
    pred_cls = np.array([DETS[i][1] for i, _ in COUNTED], float)
    ap = ap_per_class(tp, conf, pred_cls, np.array([c for _, c, _ in GTS], float))[5]
    assert got[PARTIAL_MAP_KEYS[0]] == pytest.approx(ap[:, 0].mean(), abs=1e-9)
    assert got[PARTIAL_MAP_KEYS[1]] == pytest.approx(ap.mean(), abs=1e-9)
    assert got["fitness"] == got[PARTIAL_MAP_KEYS[1]]  # best.pt is chosen by the partial-aware mAP50-95
    # and by hand: a and b are found first once the ignored detections are left out (AP 1), c after a false alarm
    assert got[PARTIAL_MAP_KEYS[0]] == pytest.approx((1 + 1 + 0.5) / 3, abs=0.01)
    assert stock["metrics/mAP50(B)"] == pytest.approx(0.5, abs=0.01)
    assert v.metrics.partial["ignored"] == 2 and len(v.metrics.class_result(0)) == 6


def test_negatives_and_ignore_boxes_each_matter(tmp_path):
    """Without the negative, c's false alarm in a.jpg is ignored too; without the ignore box, the detection in R counts."""
    for entry, expect in ((ImagePartial({0}, set(), [_xywh(R)]), (1 + 1 + 1) / 3),
                          (ImagePartial({0}, {2}), (0.5 + 1 + 0.5) / 3)):
        write_partial(tmp_path / "p.json", {"images/a.jpg": entry}, list(NAMES.values()))
        v = _validator(PartialDetectionValidator, tmp_path / "v", partial=load_partial(tmp_path / "p.json", NAMES),
                       enabled=True)
        assert _feed(v, tmp_path)[PARTIAL_MAP_KEYS[0]] == pytest.approx(expect, abs=0.01)


def test_off_without_partial_is_ultralytics(tmp_path):
    v = _validator(PartialDetectionValidator, tmp_path / "v", enabled=False)
    stock = _feed(_validator(DetectionValidator, tmp_path / "s"), tmp_path)
    assert _feed(v, tmp_path) == stock and v.metrics.keys == DetMetrics().keys


def test_ignore_boxes_placed_in_the_letterboxed_frame():
    # a 200 x 100 original letterboxed into 64 x 64: gain 0.32, 16 px of padding above and below
    entry = ImagePartial({0}, set(), [[0.5, 0.5, 0.5, 0.5]])  # (50, 25)-(150, 75) px in the original
    got = ignore_in_frame(entry, (100, 200), ((0.32, 0.32), (0, 16)), (64, 64))
    np.testing.assert_allclose(got.ignore, [[0.5, 0.5, 0.5, 0.25]], atol=1e-6)  # (16, 24)-(48, 40) px
    assert got.labeled == {0} and ignore_in_frame(None, (1, 1), None, (1, 1)) is None


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def merged_run(tmp_path_factory):
    from ultralytics import YOLO

    from yolo_partial.merge import merge_datasets

    root = shapes.generate(tmp_path_factory.mktemp("shapes") / "s", n_train=8, n_val=4).parent
    out = tmp_path_factory.mktemp("merged")
    data = merge_datasets([str(y) for y in _class_sources(root / "full.yaml", out)], out / "merged")
    runs = tmp_path_factory.mktemp("runs")
    model = YOLO("yolov8n.yaml")
    model.train(trainer=PartialDetectionTrainer, data=str(data), imgsz=IMGSZ, epochs=1, batch=4, workers=0,
                project=str(runs), name="cp", exist_ok=True, plots=False, device="cpu")
    return model.trainer, data


def test_train_and_val_on_a_merged_dataset(merged_run, caplog):
    import pandas as pd

    from yolo_partial.cli import main

    trainer, data = merged_run
    assert trainer.args.class_partial and isinstance(trainer.validator, PartialDetectionValidator)
    row = pd.read_csv(trainer.csv).iloc[-1]
    assert row["train/cp_drop"] > 0 and "train/cp_ignore" in row and "val/cp_drop" in row
    for k in (*PARTIAL_MAP_KEYS, "metrics/mAP50(B)"):
        assert 0 <= row[k] <= 1
    assert trainer.best_fitness == pytest.approx(row[PARTIAL_MAP_KEYS[1]], abs=1e-5)
    assert Path(trainer.best).is_file()
    caplog.set_level("INFO")
    caplog.clear()
    assert main(["val", f"model={trainer.best}", f"data={data}", f"imgsz={IMGSZ}", "batch=4", "plots=False"]) == 0
    assert "Partial-aware mAP50" in caplog.text
    caplog.clear()
    assert main(["val", f"model={trainer.best}", f"data={data}", f"imgsz={IMGSZ}", "batch=4", "plots=False",
                 "partial_eval=False"]) == 0
    assert "Speed:" in caplog.text and "Partial-aware" not in caplog.text


def test_accept_carries_partial(merged_run, tmp_path):
    """mine -> a review keeping one candidate -> accept: the new version names a partial.json with the source's
    entries (mined images by their new path, the others by absolute path), a gained class no longer negative."""
    import json

    from yolo_partial.accept import run_accept
    from yolo_partial.mine import run_mine
    from yolo_partial.partial_labels import load_for_data
    from yolo_partial.split import TrainSet, carry_partial

    trainer, data = merged_run
    mined = run_mine({"model": str(trainer.best), "data": str(data), "out": str(tmp_path / "mined"), "conf": 1e-4,
                      "imgsz": IMGSZ, "batch": 4})
    coco = json.loads((mined / "candidates.json").read_text())
    cand = next(a for a in coco["annotations"] if a["candidate"])
    im = next(i for i in coco["images"] if i["id"] == cand["image_id"])
    keep = [a for a in coco["annotations"] if a["image_id"] == im["id"] and not a["candidate"]] + [cand]
    (tmp_path / "review.json").write_text(json.dumps(dict(coco, images=[im], annotations=keep)))
    out = run_accept({"reviewed": str(tmp_path / "review.json"), "mined": str(mined), "out": str(tmp_path / "acc")})
    src, new = load_for_data(data), load_for_data(out)
    assert new is not None and len(new) == len(src)
    for rel, entry in src.entries.items():
        got = new.for_image(out.parent / rel) if "/images/train/" in rel else new.for_image(src.root / rel)
        assert got == entry  # no negatives in the merge: every claim carries over unchanged
    # the rule on its own: a class that gained a box is no longer verified absent; lost classes leave labeled_classes
    images = TrainSet("images", {"x/a.jpg": str(tmp_path / "x" / "a.jpg")})
    write_partial(tmp_path / "p.json", {"x/a.jpg": ImagePartial({0, 1}, {2}), "y/b.jpg": ImagePartial({0})},
                  list(NAMES.values()))
    p = load_partial(tmp_path / "p.json", NAMES)
    got = carry_partial(p, images, {"x/a.jpg": {1}}, {"x/a.jpg": {2}})
    assert got["x/a.jpg"] == ImagePartial({0}, set()) and got[str(tmp_path / "y" / "b.jpg")] == ImagePartial({0})
