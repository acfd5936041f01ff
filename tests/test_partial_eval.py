"""Partial-aware mAP: a fixture counted by hand, Ultralytics' own mAP when there is no partial information, and
pycocotools' per-detection decisions (matches, crowd ignores) for the non-federated part."""

import numpy as np
import pytest

from yolo_partial.partial_eval import federated_map, image_stats, partial_map
from yolo_partial.partial_labels import ImagePartial

SHAPE = (100, 100)  # (h, w) of the hand fixture's images, in pixels


def hand_fixture(partial_b: ImagePartial | None):
    """Two images; boxes in pixels. Image A is fully labelled, image B carries `partial_b`.

    A: GT c0 [10,10,30,30], c1 [60,60,80,80], c2 [40,10,55,25]; detections hit the c0 (0.9) and c2 (0.5) boxes.
    B: GT c0 [10,50,30,70], c1 [60,60,80,80]; detections
        0.99 c0 [43,10,68,30]  no GT; 18 of its 25 px width inside the ignore box x 50..90, y 0..40: IoA 0.72
        0.97 c0 [55, 5,75,25]  no GT; wholly inside the ignore box: IoA 1
        0.95 c1 [ 0,80,15,95]  no GT; class 1 is not labelled in B
        0.80 c2 [20,80,40,95]  no GT; class 2 is a verified negative in B
        0.70 c0 [10,50,30,70]  hits c0
        0.60 c1 [60,60,80,80]  hits c1 (a hit counts even though class 1 is not labelled)
    """
    a = ([[10, 10, 30, 30], [40, 10, 55, 25]], [0.9, 0.5], [0, 2],
         [[10, 10, 30, 30], [60, 60, 80, 80], [40, 10, 55, 25]], [0, 1, 2], None, SHAPE)
    b = ([[43, 10, 68, 30], [55, 5, 75, 25], [0, 80, 15, 95], [20, 80, 40, 95], [10, 50, 30, 70], [60, 60, 80, 80]],
         [0.99, 0.97, 0.95, 0.8, 0.7, 0.6], [0, 0, 1, 2, 0, 1], [[10, 50, 30, 70], [60, 60, 80, 80]], [0, 1],
         partial_b, SHAPE)
    return [a, b]


B_PARTIAL = ImagePartial(labeled={0}, negative={2}, ignore=[[0.7, 0.2, 0.4, 0.4]])  # ignore box: x 50..90, y 0..40


def test_hand_counted_partial_map():
    """Counted by hand. AP is Ultralytics' 101-point rule: a class whose counted detections rank all its hits first at
    precision p, reaching recall r, scores p * 0.995 at r = 1 (the curve drops to 0 at the last point) and 0.495 for
    p = 1, r = 1/2.

    class 0 (2 GT): the IoA-1 detection is ignored at every threshold; the IoA-0.72 one at t <= 0.70 (COCO's crowd
        rule: IoA >= t), a false alarm ranked first at t >= 0.75. So AP = 0.995 at 5 thresholds, 0.995 * 2/3 at 5.
    class 1 (2 GT): the unmatched 0.95 detection is ignored (class 1 not labelled in B); the hit counts; the GT in A is
        missed: p = 1 to r = 1/2 -> 0.495 at every threshold.
    class 2 (1 GT): the 0.80 detection in B is a false alarm (verified negative), then the hit: p = 1/2 -> 0.4975.
    """
    r = partial_map(hand_fixture(B_PARTIAL))
    ap0 = 0.995 * (5 + 5 * 2 / 3) / 10
    assert r["ap_class_index"].tolist() == [0, 1, 2]
    assert r["ap"][0].tolist() == pytest.approx([0.995] * 5 + [0.995 * 2 / 3] * 5)
    assert r["per_class"] == {0: {"ap50": pytest.approx(0.995), "ap": pytest.approx(ap0)},
                              1: {"ap50": pytest.approx(0.495), "ap": pytest.approx(0.495)},
                              2: {"ap50": pytest.approx(0.4975), "ap": pytest.approx(0.4975)}}
    assert r["map50"] == pytest.approx((0.995 + 0.495 + 0.4975) / 3)
    assert r["map"] == pytest.approx((ap0 + 0.495 + 0.4975) / 3)
    assert (r["ignored"], r["detections"], r["targets"]) == (3, 8, 5)


def test_hand_counted_without_partial_and_unknown_class():
    """Without partial info every detection counts. class 0: two false alarms first, then both hits: p = 1/2 at
    r = 1 -> 0.4975; class 1: false alarm then a hit, r = 1/2 at p = 1/2 -> 0.2475; class 2 as before, 0.4975.
    With class 2 merely unknown in B (not negative), its false alarm there is ignored: class 2 -> 0.995."""
    r = partial_map(hand_fixture(None))
    assert [r["per_class"][c]["ap50"] for c in range(3)] == pytest.approx([0.4975, 0.2475, 0.4975])
    assert r["map50"] == pytest.approx((0.4975 + 0.2475 + 0.4975) / 3) and r["ignored"] == 0
    r = partial_map(hand_fixture(ImagePartial(labeled={0}, ignore=B_PARTIAL.ignore)))
    assert r["per_class"][2]["ap50"] == pytest.approx(0.995)


def test_normalised_boxes_and_score_order():
    """Boxes normalised (shape None) give the same result; so does any input order of the detections."""
    pixels = partial_map(hand_fixture(B_PARTIAL))
    norm = [(np.array(pb) / 100, ps, pc, np.array(gb) / 100, gc, p) for pb, ps, pc, gb, gc, p, _ in
            hand_fixture(B_PARTIAL)]
    flipped = [(pb[::-1], ps[::-1], pc[::-1], gb, gc, p, s) for pb, ps, pc, gb, gc, p, s in hand_fixture(B_PARTIAL)]
    for r in (partial_map(norm), partial_map(flipped)):
        assert r["map50"] == pytest.approx(pixels["map50"]) and r["map"] == pytest.approx(pixels["map"])


def random_images(seed: int, n: int = 16, nc: int = 4, crowds: bool = False):
    """Random images in a 200x200 px frame: GT boxes, detections near them (some of the wrong class) and elsewhere,
    in descending score order (as NMS returns them); with crowds, ignore boxes holding some detections and GT."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        xy = rng.uniform(0, 150, (rng.integers(0, 7), 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 50, xy.shape)], 1)
        gc = rng.integers(0, nc, len(gt))
        near = gt[rng.random(len(gt)) < 0.8]
        near = near + rng.normal(0, 4, near.shape)
        xy = rng.uniform(0, 170, (rng.integers(0, 5), 2))
        boxes = np.concatenate([near, np.concatenate([xy, xy + rng.uniform(5, 30, xy.shape)], 1)])
        cls = np.concatenate([gc[: len(near)] if len(gt) else [], rng.integers(0, nc, len(xy))]).astype(int)
        cls = np.where(rng.random(len(cls)) < 0.15, rng.integers(0, nc, len(cls)), cls)
        ignore = np.zeros((0, 4))
        if crowds and rng.random() < 0.6:
            cxy = rng.uniform(20, 140, (rng.integers(1, 3), 2))
            ignore = np.concatenate([cxy, rng.uniform(30, 70, cxy.shape)], 1)  # xywh px
            inside = cxy[:, None] + rng.uniform(-0.5, 0.5, (len(cxy), 3, 2)) * ignore[:, None, 2:]
            inside = inside.reshape(-1, 2)
            boxes = np.concatenate([boxes, np.concatenate([inside - 6, inside + 6], 1)])
            cls = np.concatenate([cls, rng.integers(0, nc, len(inside))])
        scores = np.concatenate([rng.uniform(0.3, 1, len(near)), rng.uniform(0, 0.7, len(boxes) - len(near))])
        order = np.argsort(-scores)
        partial = ImagePartial(ignore=ignore / 200) if len(ignore) else None
        images.append((boxes[order].clip(0, 200), scores[order], cls[order], gt, gc.astype(float), partial, (200, 200)))
    return images


def ultralytics_metrics(images, names, save_dir):
    """Ultralytics' own mAP: the detection validator's _process_batch and DetMetrics, fed like update_metrics."""
    import torch
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import DetMetrics

    validator, metrics = DetectionValidator(save_dir=save_dir), DetMetrics(names=names)
    for k, (pb, ps, pc, gb, gc, *_) in enumerate(images):
        pred = {"bboxes": torch.tensor(pb, dtype=torch.float32).reshape(-1, 4), "cls": torch.tensor(pc).float()}
        batch = {"bboxes": torch.tensor(gb, dtype=torch.float32).reshape(-1, 4), "cls": torch.tensor(gc).float()}
        metrics.update_stats({**validator._process_batch(pred, batch), "target_cls": batch["cls"].numpy(),
                              "target_img": np.unique(batch["cls"].numpy()), "conf": np.asarray(ps, np.float32),
                              "pred_cls": pred["cls"].numpy(), "im_name": f"{k}.jpg"})
    metrics.process()
    return metrics


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_ultralytics_without_partial_info(tmp_path, seed):
    nc = 4
    images = [(np.float32(pb), np.float32(ps), pc.astype(np.float32), np.float32(gb), np.float32(gc), None, s)
              for pb, ps, pc, gb, gc, _, s in random_images(seed, nc=nc)]
    ref = ultralytics_metrics(images, {i: str(i) for i in range(nc)}, tmp_path)
    assert 0.1 < ref.box.map50 < 0.95  # a fixture with both hits and misses
    every = [im[:5] + (ImagePartial(labeled=set(range(nc))),) for im in images]  # asserts everything
    for variant in (images, [im[:5] + (ImagePartial(),) for im in images], every):
        r = partial_map(variant)
        assert (r["map50"], r["map"], r["mp"], r["mr"]) == (ref.box.map50, ref.box.map, ref.box.mp, ref.box.mr)
        assert r["ap_class_index"].tolist() == ref.box.ap_class_index.tolist()
        assert np.array_equal(r["ap"], ref.box.all_ap)


def test_no_detections_or_no_targets():
    assert partial_map([])["map"] == 0.0
    r = partial_map([(np.zeros((0, 4)), [], [], [[0, 0, 5, 5]], [1], ImagePartial({1}))])
    assert (r["map50"], r["ap_class_index"].tolist(), r["detections"]) == (0.0, [1], 0)
    s = image_stats([[0, 0, 5, 5]], [0.5], [1], np.zeros((0, 4)), [], ImagePartial(set()))
    assert not s["counted"].any() and not s["tp"].any()  # nothing asserted, nothing to hit: ignored
    assert federated_map([s])["map"] == 0.0


def test_matches_and_crowd_ignores_agree_with_pycocotools(capsys):
    """The non-federated part against pycocotools: ignore boxes as crowd regions (of every category), every
    detection's hit / ignored decision at all 10 thresholds equal; mAP close (the two interpolate PR curves
    differently: Ultralytics linearly with a trapezoid, pycocotools by steps)."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    nc, images = 4, random_images(3, n=24, crowds=True)
    gt = {"images": [{"id": k + 1, "width": 200, "height": 200} for k in range(len(images))],
          "categories": [{"id": c + 1, "name": str(c)} for c in range(nc)], "annotations": []}
    dets = []
    for k, (pb, ps, pc, gb, gc, partial, _) in enumerate(images):
        for b, c in zip(gb, gc):
            gt["annotations"].append({"image_id": k + 1, "category_id": int(c) + 1, "iscrowd": 0,
                                      "bbox": [*map(float, b[:2]), *map(float, b[2:] - b[:2])]})
        for box in (partial.ignore * 200 if partial else []):
            for c in range(nc):  # COCO crowds belong to a category; an ignore box holds for every class
                gt["annotations"].append({"image_id": k + 1, "category_id": c + 1, "iscrowd": 1,
                                          "bbox": [*map(float, box[:2] - box[2:] / 2), *map(float, box[2:])]})
        dets += [{"image_id": k + 1, "category_id": int(c) + 1, "score": float(s),
                  "bbox": [*map(float, b[:2]), *map(float, b[2:] - b[:2])]} for b, s, c in zip(pb, ps, pc)]
    for n, a in enumerate(gt["annotations"]):
        a.update(id=n + 1, area=a["bbox"][2] * a["bbox"][3])
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")  # loadRes numbers detections 1.. in list order
    ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
    ev.evaluate()
    ev.accumulate()
    decided = {}  # detection id -> (hit (10,), ignored (10,))
    for e in filter(None, ev.evalImgs):
        for j, d in enumerate(e["dtIds"]):
            ignored = e["dtIgnore"][:, j].astype(bool)
            decided[d] = ((e["dtMatches"][:, j] > 0) & ~ignored, ignored)
    ours, det_id, n_ignored = [], 0, 0
    for im in images:
        s = image_stats(*im)
        ours.append(s)
        for j in range(len(s["conf"])):
            det_id += 1
            hit, ignored = decided[det_id]
            assert np.array_equal(s["tp"][j] & s["counted"][j], hit) and np.array_equal(~s["counted"][j], ignored)
            n_ignored += ignored[0]
    assert n_ignored >= 5 and det_id == len(dets)  # the fixture exercises the crowd rule
    precision = ev.eval["precision"][:, :, :, 0, 0]  # (T, R, K)
    coco_map = np.mean([precision[:, :, k][precision[:, :, k] > -1].mean() for k in range(nc)])
    coco_map50 = np.mean([precision[0, :, k].mean() for k in range(nc)])
    r = federated_map(ours)
    assert abs(r["map"] - coco_map) < 0.01 and abs(r["map50"] - coco_map50) < 0.01, (r["map"], coco_map)
