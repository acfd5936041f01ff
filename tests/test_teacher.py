"""Tests of teacher-student pseudo-labelling (yolo_partial.losses.teacher).

The three-way split and the loss are checked on handmade teacher boxes whose fate is known exactly, against the plain
criterion called on hand-written targets and masks; decoding against the head's own inference output; calibration
against an independent brute-force computation (loops over boxes and anchors, sorted scores); then warm-up, gradients,
the own EMA's bookkeeping, keys, and two tiny end-to-end runs (resume, checkpoints in stock Ultralytics, YOLO26).
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.metrics import box_iou
from ultralytics.utils.ops import xywh2xyxy
from ultralytics.utils.torch_utils import ModelEMA

from conftest import criterion, train_args, train_models
from yolo_partial import PartialDetectionTrainer, shapes
from yolo_partial.errors import PartialConfigError
from yolo_partial.keys import METHOD_DEFAULTS, method_args
from yolo_partial.losses import partial_criterion
from yolo_partial.losses.method import CHECKPOINT_KEY
from yolo_partial.losses.teacher import (BINS, COUNTS, HI_RANGE, LO_MIN, MIN_BOXES, POS, UNC, Teacher, TeacherLoss,
                                         histogram, invented_threshold, labelled_box_scores, precision_threshold,
                                         recall_threshold, split_boxes, strong_view, teacher_predictions)  # fmt: skip

IMGSZ, NC = 64, 3
HEADS = ("yolov8n.yaml", "yolo26n.yaml")
GT = {"batch_idx": torch.tensor([0.0]), "cls": torch.tensor([[0.0]]),
      "bboxes": torch.tensor([[0.75, 0.75, 0.375, 0.375]])}  # class 0 at (36, 36)-(60, 60) px  # fmt: skip
# handmade teacher predictions for that image: pixel box, class, score   -> fate with tau_hi 0.5, tau_lo 0.2
HANDMADE = [
    ((4, 4, 20, 20), 1, 0.9),  # positive
    ((4, 40, 24, 60), 2, 0.3),  # uncertain
    ((36, 36, 60, 58), 0, 0.95),  # skipped: IoU 0.92 with the same-class GT
    ((40, 4, 60, 20), 1, 0.1),  # background: below tau_lo
    ((36, 36, 60, 60), 2, 0.8),  # positive: the GT there is of another class
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: these models are tiny, and on a shared 2-core machine two threads contend (a 64 px forward
    measured 3.6 s with two threads under load, 0.06 s with one)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    return shapes.generate(tmp_path_factory.mktemp("shapes") / "s", n_train=16, n_val=4)



@pytest.fixture(scope="module")
def models():
    return train_models(HEADS, NC)



def _handmade():
    boxes = torch.tensor([[list(b) for b, _, _ in HANDMADE]], dtype=torch.float)
    scores = torch.zeros(1, len(HANDMADE), NC)
    for i, (_, c, s) in enumerate(HANDMADE):
        scores[0, i, c] = s
    return boxes, scores


def _split(**kw):
    boxes, scores = _handmade()
    args = dict(tau_hi=torch.full((NC,), 0.5), tau_lo=torch.full((NC,), 0.2), nms=0.5, gt_iou=0.4)
    return split_boxes(boxes, scores, {k: v.clone() for k, v in GT.items()}, (IMGSZ, IMGSZ), **{**args, **kw})


def _xywh(x1, y1, x2, y2):
    return [(x1 + x2) / 2 / IMGSZ, (y1 + y2) / 2 / IMGSZ, (x2 - x1) / IMGSZ, (y2 - y1) / IMGSZ]


# ----------------------------------------------------------------------------------------------- three-way split
def test_three_way_split_of_handmade_teacher_boxes():
    mined = _split()
    expect_pos = [[0, 1, *_xywh(4, 4, 20, 20), 0.9], [0, 2, *_xywh(36, 36, 60, 60), 0.8]]
    expect_unc = [[0, 2, *_xywh(4, 40, 24, 60), 0.3]]
    torch.testing.assert_close(mined.pos, torch.tensor(expect_pos), rtol=0, atol=1e-6)
    torch.testing.assert_close(mined.unc, torch.tensor(expect_unc), rtol=0, atol=1e-6)
    assert len(_split(gt_iou=0.95).pos) == 3  # a looser GT rule keeps the box over the labelled object
    assert len(_split(tau_lo=torch.full((NC,), 0.05)).unc) == 2  # the 0.1 box joins the uncertain band
    per_class = _split(tau_hi=torch.tensor([0.5, 0.95, 0.5]))  # class 1 needs 0.95: its 0.9 box becomes uncertain
    assert per_class.pos[:, 1].tolist() == [2] and sorted(per_class.unc[:, 1].tolist()) == [1, 2]


def test_class_rules_one_class_per_object_and_undecided_objects():
    """teacher_classes: with `one`/`sure` the class-2 box on the class-0 GT is skipped; of two boxes of different
    classes on one unlabelled object (IoU 0.81 > nms 0.5) `one` keeps the better-scored one, whichever band it is in,
    and `sure` keeps both as uncertain (the teacher has not decided that object's class)."""
    for classes in ("one", "sure"):
        mined = _split(classes=classes)
        torch.testing.assert_close(mined.pos, torch.tensor([[0, 1, *_xywh(4, 4, 20, 20), 0.9]]), rtol=0, atol=1e-6)
        assert mined.unc[:, 1].tolist() == [2]
    boxes = torch.tensor([[[4, 4, 24, 24], [4, 4, 22, 22], [40, 4, 60, 24], [42, 6, 60, 24], [4, 40, 20, 56]]],
                         dtype=torch.float)  # fmt: skip
    scores = torch.zeros(1, 5, NC)
    scores[0, 0, 1], scores[0, 1, 2], scores[0, 2, 0], scores[0, 3, 1], scores[0, 4, 0] = 0.6, 0.7, 0.3, 0.25, 0.8
    gt = {"batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    kw = dict(tau_hi=torch.full((NC,), 0.5), tau_lo=torch.full((NC,), 0.2), nms=0.5, gt_iou=0.4)
    lone = [0, 0, *_xywh(4, 40, 20, 56), 0.8]  # alone on its object: a positive under every rule
    both = split_boxes(boxes, scores, gt, (IMGSZ, IMGSZ), **kw)
    assert sorted(both.pos[:, 1].tolist()) == [0, 1, 2] and sorted(both.unc[:, 1].tolist()) == [0, 1]
    one = split_boxes(boxes, scores, gt, (IMGSZ, IMGSZ), **kw, classes="one")
    torch.testing.assert_close(one.pos, torch.tensor([lone, [0, 2, *_xywh(4, 4, 22, 22), 0.7]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(one.unc, torch.tensor([[0, 0, *_xywh(40, 4, 60, 24), 0.3]]), rtol=0, atol=1e-6)
    sure = split_boxes(boxes, scores, gt, (IMGSZ, IMGSZ), **kw, classes="sure")
    torch.testing.assert_close(sure.pos, torch.tensor([lone]), rtol=0, atol=1e-6)
    unc = sorted((int(c), round(v, 4)) for c, v in sure.unc[:, [1, 6]].tolist())
    assert unc == [(0, 0.3), (1, 0.25), (1, 0.6), (2, 0.7)]


def _student_preds(model, n=1):
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.rand(n, 3, IMGSZ, IMGSZ))


def _teacher_batch(mined):
    batch = {"img": torch.zeros(1, 3, IMGSZ, IMGSZ), **{k: v.clone() for k, v in GT.items()}}
    batch[POS], batch[UNC], batch[COUNTS] = mined.pos, mined.unc, torch.tensor([2.0, 1, 0, 0, 0])
    return batch


def _expected(plain, preds, mined, soft):
    """The classification and box losses written out: GT + positives as labels, uncertain anchors out of their class's
    background term, and with soft=True the positives' targets capped at their scores, box terms weighted by them."""
    rows = torch.cat((mined.pos[:, :6], torch.tensor([[0.0, 0, *GT["bboxes"][0].tolist()]])))[[2, 0, 1]]  # GT first
    a = plain.assign(preds, {"batch_idx": rows[:, 0], "cls": rows[:, 1:2], "bboxes": rows[:, 2:6]})
    targets = a.target_scores.clone()
    box_scores = a.target_scores.clone()
    if soft:  # a pseudo positive's target is capped at the teacher's score; its box terms are weighted by it
        for j, (c, s) in enumerate(zip(mined.pos[:, 1].long().tolist(), mined.pos[:, 6].tolist()), start=1):
            sel = a.fg_mask[0] & (a.target_gt_idx[0] == j)
            targets[0, sel, c] = targets[0, sel, c].clamp(max=s)
            box_scores[0, sel] *= s
    bce = plain.bce(a.pred_scores, targets)
    weight = torch.ones_like(bce)
    pts = a.anchor_points * a.stride_tensor
    x1, y1, x2, y2 = 4, 40, 24, 60
    inside = (pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1) & (pts[:, 1] < y2)
    ignored = torch.zeros_like(bce, dtype=torch.bool)
    ignored[0, inside, 2] = True
    cls = (bce * weight).masked_fill(ignored & (a.target_scores <= 0), 0).sum() / a.target_scores_sum * plain.hyp.cls
    box, _ = plain.bbox_loss(a.pred_distri, a.pred_bboxes, a.anchor_points, a.target_bboxes / a.stride_tensor,
                             box_scores, a.target_scores_sum, a.fg_mask, a.imgsz, a.stride_tensor)  # fmt: skip
    return cls, box * plain.hyp.box, a, inside


@pytest.mark.parametrize("soft", [False, True])
def test_positives_and_uncertain_boxes_in_the_loss(models, soft):
    model = models["yolov8n.yaml"]
    crit = criterion(model, teacher=True, teacher_soft=soft)
    plain = criterion(model)
    assert isinstance(crit, TeacherLoss) and not isinstance(plain, TeacherLoss)
    preds, mined = _student_preds(model), _split()
    if soft:
        mined.pos[:, 6] = torch.tensor([1e-7, 0.9])  # under the assigner's targets (~1e-6 for this untrained model)
    loss, items = crit(preds, _teacher_batch(mined))
    cls, box, a, inside = _expected(plain, preds, mined, soft)
    if soft:
        hard, _, _, _ = _expected(plain, preds, mined, False)
        assert not torch.allclose(cls, hard)
    torch.testing.assert_close(items["cls_loss"], cls.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(items["box_loss"], box.detach(), rtol=1e-5, atol=1e-7)
    assert items["teacher_pos"] == 2 and items["teacher_unc"] == 1
    # the confident box is a positive: the assigner gives it anchors; the uncertain one is none and has anchors inside
    fg_targets = a.target_bboxes[a.fg_mask]
    assert (fg_targets - torch.tensor([4.0, 4, 20, 20])).abs().amax(1).min() < 1e-3
    assert inside.sum() > 0 and not (a.fg_mask[0] & inside).any()
    # without the uncertain band, the classification loss is larger (those background terms count again)
    no_unc = _teacher_batch(mined)
    no_unc[UNC] = mined.unc[:0]
    assert crit(preds, no_unc)[1]["cls_loss"] > items["cls_loss"]


def test_asserted_terms_are_never_relaxed(models):
    """Class-partial labels asserting a class everywhere: its uncertain boxes ignore nothing, its pseudo positives
    become background again, so the loss equals the plain loss on the GT alone."""
    model = models["yolov8n.yaml"]
    crit = criterion(model, teacher=True, teacher_soft=False)
    teacher = crit.methods[0]
    preds, mined = _student_preds(model), _split()
    from yolo_partial.losses.method import Terms

    apply = teacher.apply

    def asserted_apply(t: Terms):
        t.asserted = torch.ones_like(t.cls_elem, dtype=torch.bool)  # every class's background asserted everywhere
        apply(t)

    teacher.apply = asserted_apply
    try:
        _, items = crit(preds, _teacher_batch(mined))
    finally:
        del teacher.apply
    plain = criterion(model)
    rows = torch.cat((GT["batch_idx"][:, None], GT["cls"], GT["bboxes"], ), 1)
    merged = torch.cat((rows, mined.pos[:, :6]))
    _, p_items = plain(preds, {"batch_idx": merged[:, 0], "cls": merged[:, 1:2], "bboxes": merged[:, 2:6]})
    a = plain.assign(preds, {"batch_idx": merged[:, 0], "cls": merged[:, 1:2], "bboxes": merged[:, 2:6]})
    pseudo_fg = a.fg_mask & (a.target_gt_idx >= 1)
    targets = a.target_scores.masked_fill(pseudo_fg[..., None], 0)
    cls = plain.bce(a.pred_scores, targets).sum() / a.target_scores_sum * plain.hyp.cls
    torch.testing.assert_close(items["cls_loss"], cls, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("head", HEADS)
def test_batches_without_teacher_boxes_are_stock(models, head):
    """Knobs off = stock exactly: teacher=False (other teacher keys set) is the plain criterion; with teacher=True a
    batch without teacher boxes (warm-up, the validator's) gets the base loss exactly and zero counts."""
    model = models[head]
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        preds = model(x)
    batch = {"img": x, "batch_idx": torch.tensor([0.0, 1]), "cls": torch.tensor([[0.0], [2]]),
             "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.4]])}  # fmt: skip
    off = criterion(model, teacher=False, teacher_hi=0.9, teacher_lo=0.1, teacher_soft=False, teacher_warmup=3,
                teacher_decay=0.5, teacher_calib="fixed")  # fmt: skip
    assert not isinstance(off, TeacherLoss)
    model.args = train_args()
    stock = model.init_criterion()
    s_loss, s_items = stock(preds, batch)
    loss, items = off(preds, batch)
    assert torch.equal(loss, s_loss) and list(items) == list(s_items)
    assert all(torch.equal(items[k], s_items[k]) for k in items)
    on = criterion(model, teacher=True)
    loss, items = on(preds, batch)
    assert torch.equal(loss, s_loss) and list(items) == [*s_items, "teacher_pos", "teacher_unc"]
    assert items["teacher_pos"] == 0 and items["teacher_unc"] == 0
    hidden = TeacherLoss(on.base, hidden=True)
    assert list(hidden(preds, batch)[1])[-5:] == ["teacher_pos", "teacher_unc", "teacher_hit", "teacher_hidden",
                                                   "teacher_covered"]  # fmt: skip


def test_yolo26_loss_with_teacher_boxes_in_both_branches(models):
    model = models["yolo26n.yaml"]
    crit = criterion(model, teacher=True)
    assert len(crit.methods) == 2  # one2many and one2one both see the teacher's boxes
    loss, items = crit(_student_preds(model), _teacher_batch(_split()))
    assert torch.isfinite(loss).all() and items["teacher_pos"] == 2
    assert all(m.ctx is None for m in crit.methods)  # handed over for one call only


# ----------------------------------------------------------------------------------------------- teacher outputs
@pytest.mark.parametrize("head", HEADS)
def test_teacher_predictions_decode_as_the_head_does(models, head):
    from copy import deepcopy

    model = deepcopy(models[head]).eval()
    try:
        x = torch.rand(2, 3, IMGSZ, IMGSZ)
        with torch.no_grad():
            for m in getattr(model.model[-1], "one2one_cv3", None) or []:  # branches that differ, as after training
                m[-1].bias.add_(torch.randn_like(m[-1].bias))
            y, raw = model(x)
        boxes, scores = teacher_predictions(model, x)
        branch = raw["one2one"] if "one2one" in raw else raw  # YOLO26: the one-to-one branch
        ref = model.model[-1]._inference(branch)  # the head's own decoding (xywh while it infers one-to-many)
        torch.testing.assert_close(boxes, xywh2xyxy(ref[:, :4].permute(0, 2, 1)), rtol=0, atol=1e-3)
        torch.testing.assert_close(scores, ref[:, 4:].permute(0, 2, 1), rtol=0, atol=1e-6)
        if "one2one" in raw:
            assert not torch.allclose(scores, raw["one2many"]["scores"].sigmoid().permute(0, 2, 1))
    finally:
        model.train()


def test_strong_view_keeps_geometry():
    img = torch.full((12, 3, 32, 32), 0.2)
    img[:, :, 4:9, 3:12] = torch.tensor([0.9, 0.4, 0.1])[:, None, None]  # a coloured rectangle
    assert torch.equal(strong_view(img, p_jitter=0.0, erase=()), img)
    torch.manual_seed(3)
    jit = strong_view(img, erase=())
    assert jit.shape == img.shape and jit.min() >= 0 and jit.max() <= 1 and not torch.equal(jit, img)
    inside = torch.zeros(32 * 32, dtype=torch.bool)
    inside.view(32, 32)[4:9, 3:12] = True
    for o in jit:  # colour only: the rectangle stays where it was
        pix = o.flatten(1).T
        assert len(pix[inside].unique(dim=0)) == 1 and len(pix[~inside].unique(dim=0)) == 1
    cut = strong_view(img, p_jitter=0.0, erase=((1.0, 0.05, 0.1),))
    changed = (cut != img).any(1)  # (B, H, W)
    assert changed.any(), "every image gets its patch"
    for c, o in zip(changed, cut):  # one grey axis-aligned rectangle, everything else untouched
        ys, xs = c.nonzero(as_tuple=True)
        if len(ys):
            box = torch.zeros_like(c)
            box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
            assert torch.equal(c | (box & (o == 114 / 255).all(0)), box)


# ----------------------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("share", [0.1, 0.5, 0.9, 0.97])
def test_recall_threshold_against_sorted_scores(share):
    g = torch.Generator().manual_seed(int(share * 100))
    scores = torch.rand(3, 257, generator=g) ** torch.tensor([[0.5], [1.0], [3.0]])
    cls = torch.arange(3).repeat_interleave(257)
    got = recall_threshold(histogram(scores.flatten(), cls, 3), share)
    for c in range(3):
        s = sorted(scores[c].tolist(), reverse=True)
        kth = s[math.ceil(share * len(s)) - 1]  # recall >= share needs the k-th best box, k = ceil(share n)
        expect = math.floor(kth * BINS) / BINS
        assert abs(float(got[c]) - expect) <= 1 / BINS + 1e-12  # exact up to float rounding at a bin edge
        recalled = sum(x >= float(got[c]) for x in s) / len(s)
        assert recalled >= share
    assert math.isnan(float(recall_threshold(torch.zeros(1, BINS, dtype=torch.long), 0.5)[0]))


def test_labelled_box_scores_against_brute_force(models):
    from copy import deepcopy

    model = deepcopy(models["yolov8n.yaml"]).eval()
    try:
        torch.manual_seed(5)
        x = torch.rand(2, 3, IMGSZ, IMGSZ)
        with torch.no_grad():
            for m in model.model[-1].cv3:  # give the classes varied, non-trivial probabilities
                m[-1].bias.add_(torch.randn_like(m[-1].bias) * 2 + 3)
            y, _ = model(x)
        gt_idx, gt_cls = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 2, 1, 1, 0])
        near = [xywh2xyxy(y[b, :4, a]) for b, a in ((0, 10), (0, 70), (1, 30), (1, 31))]  # boxes some anchors predict
        gt = torch.stack([near[0] + 1, near[1] - 2, near[2], near[3] + torch.tensor([3.0, -2, 1, 2]),
                          torch.tensor([50.0, 50, 52, 52])])  # the last one overlaps no prediction enough  # fmt: skip
        boxes, scores = teacher_predictions(model, x)
        got = labelled_box_scores(boxes, scores, gt_idx, gt_cls, gt)
        for i in range(len(gt)):  # loops over anchors, with the head's own decoded output and Ultralytics' box_iou
            b, c = int(gt_idx[i]), int(gt_cls[i])
            pb = xywh2xyxy(y[b, :4].T)
            iou = box_iou(gt[i : i + 1], pb)[0]
            best = max((float(y[b, 4 + c, a]) for a in range(pb.shape[0]) if iou[a] >= 0.5), default=0.0)
            assert float(got[i]) == pytest.approx(best, abs=1e-6)
        assert (got > 0).sum() >= 4 and got[4] == 0
    finally:
        model.train()


def _independent_thresholds(per_class: list[list[float]], recall_hi=0.5, recall_lo=0.9, start=(0.5, 0.2),
                            dets=None, ratio=2.0):
    """The documented rule, computed from raw scores: per class (or pooled when it has < MIN_BOXES), the score at
    which the recall reaches the share, on the histogram grid; with `dets` ({class: (matched, unmatched) score
    lists}) raised to the lowest grid score from which up unmatched <= ratio * matched everywhere; clamped."""
    pooled = [s for c in per_class for s in c]

    def q(s, share):
        s = sorted(s, reverse=True)
        return math.floor(s[math.ceil(share * len(s)) - 1] * BINS) / BINS

    def bound(matched, unmatched):
        grid = lambda v: min(math.floor(v * BINS), BINS - 1)  # noqa: E731  the bin a score falls in
        mb, ub = [grid(v) for v in matched], [grid(v) for v in unmatched]
        ok = [sum(b >= k for b in ub) <= ratio * sum(b >= k for b in mb) for k in range(BINS)]
        k = BINS
        while k > 0 and ok[k - 1]:
            k -= 1
        return k / BINS

    out = []
    for c, s in enumerate(per_class):
        few = len(s) < MIN_BOXES
        use = pooled if few else s
        if len(use) < MIN_BOXES:
            out.append(start)
            continue
        hi = q(use, recall_hi)
        if dets is not None:
            m, u = ([v for cc in dets for v in dets[cc][i]] if few else dets[c][i] for i in (0, 1))
            hi = max(hi, bound(m, u))
        hi = min(max(hi, HI_RANGE[0]), HI_RANGE[1])
        out.append((hi, min(max(q(use, recall_lo), LO_MIN), hi)))
    return out


def test_calibrate_rule_with_pooling_and_clamps():
    g = np.random.default_rng(0)
    per_class = [list(g.uniform(0.3, 0.8, 40)), list(g.uniform(0.0, 0.1, 4)), list(g.uniform(0.85, 1.0, 30))]
    cls = torch.tensor([c for c, s in enumerate(per_class) for _ in s])
    scores = torch.tensor([x for s in per_class for x in s], dtype=torch.float32)
    t = Teacher(recall_hi=0.5, recall_lo=0.9)
    t.calibrate(histogram(scores, cls, 3))
    for c, (hi, lo) in enumerate(_independent_thresholds([[float(torch.tensor(x)) for x in s] for s in per_class])):
        assert float(t.tau_hi[c]) == pytest.approx(hi, abs=1 / BINS + 1e-6)
        assert float(t.tau_lo[c]) == pytest.approx(lo, abs=1 / BINS + 1e-6)
    assert float(t.tau_hi[2]) == pytest.approx(HI_RANGE[1])  # clamped from about 0.92
    assert t.calibrations == 1
    few = Teacher()
    few.calibrate(histogram(torch.tensor([0.5, 0.6]), torch.tensor([0, 1]), 3))  # too few anywhere: starting values
    assert few.tau_hi.tolist() == pytest.approx([0.5] * 3) and few.tau_lo.tolist() == pytest.approx([0.2] * 3)


def _fake_trainer(model, epoch, **kw):
    return SimpleNamespace(ema=ModelEMA(model), epoch=epoch, model=model, hidden_manifest=None, device=torch.device("cpu"),
                           data={"names": {i: str(i) for i in range(NC)}}, **kw)  # fmt: skip


def _random_batch(n_img=4, n_box=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_img * n_box
    wh = 0.15 + 0.5 * torch.rand(n, 2, generator=g)
    xy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
    return {"img": torch.rand(n_img, 3, IMGSZ, IMGSZ, generator=g),
            "batch_idx": torch.arange(n_img).repeat_interleave(n_box).float(),
            "cls": torch.randint(0, NC, (n, 1), generator=g).float(), "bboxes": torch.cat([xy, wh], 1)}  # fmt: skip


def _labels_from_teacher(teacher, batch, n=3):
    """The batch with the first n random labels of each image replaced by boxes near the teacher's own detections
    (so that some detections match a label), in the detections' class."""
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import xyxy2xywh

    with torch.no_grad():
        y, _ = teacher(batch["img"])
    for i, d in enumerate(non_max_suppression(y, conf_thres=LO_MIN, iou_thres=0.5, max_det=300)):
        rows = (batch["batch_idx"] == i).nonzero().view(-1)[:n]
        k = min(len(rows), len(d))
        batch["bboxes"][rows[:k]] = xyxy2xywh(d[:k, :4] + torch.tensor([1.0, -1, 1, 1])) / IMGSZ
        batch["cls"][rows[:k], 0] = d[:k, 5]
    return batch


def _brute_force_detections(teacher, img, labels, dets):
    """Append to dets ({class: (matched, unmatched) score lists}) every detection of the teacher on img: the head's
    own decoded output through Ultralytics' NMS, matched box by box against the labels (IoU >= 0.5, same class)."""
    from ultralytics.utils.nms import non_max_suppression

    gt = xywh2xyxy(labels["bboxes"] * IMGSZ)
    with torch.no_grad():
        y, _ = teacher(img)
    for i, d in enumerate(non_max_suppression(y, conf_thres=LO_MIN, iou_thres=0.5, max_det=300)):
        mine = labels["batch_idx"] == i
        for box, score, c in zip(d[:, :4], d[:, 4].tolist(), d[:, 5].long().tolist()):
            hit = any(float(box_iou(box[None], g[None])) >= 0.5 and int(k) == c
                      for g, k in zip(gt[mine], labels["cls"][mine].view(-1)))  # fmt: skip
            dets[c][0 if hit else 1].append(score)


def test_epoch_calibration_against_brute_force_and_ddp_sum(models, monkeypatch):
    """Thresholds after an epoch of two batches equal the rule applied to brute-force scores of all labelled boxes;
    under DDP the histogram is all-reduced first (here: a fake second rank adding its own scores)."""
    from copy import deepcopy

    model = deepcopy(models["yolov8n.yaml"])
    with torch.no_grad():
        for m in model.model[-1].cv3:
            m[-1].bias.fill_(1.0)  # probabilities around 0.5-0.8 so the clamps do not decide
    trainer = _fake_trainer(model, epoch=0)
    t = Teacher.from_args(method_args({**METHOD_DEFAULTS, "teacher": True, "teacher_warmup": 1}))
    batches = [_labels_from_teacher(trainer.ema.ema, _random_batch(seed=s)) for s in (1, 2)]
    for b in batches:
        out = t.preprocess_batch({k: v.clone() for k, v in b.items()}, trainer)
        assert POS not in out  # epoch 0 < warmup: calibration only
    per_class = [[] for _ in range(NC)]
    dets = {c: ([], []) for c in range(NC)}  # matched, unmatched detection scores
    teacher = trainer.ema.ema

    for b in batches:
        boxes, scores = teacher_predictions(teacher, b["img"])
        gt = xywh2xyxy(b["bboxes"] * IMGSZ)
        s = labelled_box_scores(boxes, scores, b["batch_idx"].long(), b["cls"].view(-1).long(), gt)
        for c, v in zip(b["cls"].view(-1).long().tolist(), s.tolist()):
            per_class[c].append(v)
        _brute_force_detections(teacher, b["img"], b, dets)
    assert sum(len(u) for _, u in dets.values()) > 0 and sum(len(m) for m, _ in dets.values()) > 0
    other_rank = torch.zeros(3, NC, BINS, dtype=torch.long)
    other_rank[0] = histogram(torch.full((20,), 0.95), torch.zeros(20, dtype=torch.long), NC)
    other_rank[1] = histogram(torch.full((5,), 0.95), torch.zeros(5, dtype=torch.long), NC)  # 5 matched at 0.95
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda x: x.add_(other_rank))
    t.epoch_end(trainer)
    per_class[0] += [0.95] * 20
    dets[0][0].extend([0.95] * 5)
    for c, (hi, lo) in enumerate(_independent_thresholds(per_class, dets=dets)):
        assert float(t.tau_hi[c]) == pytest.approx(hi, abs=1 / BINS + 1e-6), c
        assert float(t.tau_lo[c]) == pytest.approx(lo, abs=1 / BINS + 1e-6), c
    assert t.hist is None  # the next epoch starts afresh
    saved = t.state_dict()
    t2 = Teacher()
    t2.load_state_dict(saved)
    assert torch.equal(t2.tau_hi, t.tau_hi) and torch.equal(t2.tau_lo, t.tau_lo)


# ----------------------------------------------------------------------------------------------- trainer hook
def test_warmup_then_mining(models):
    model = models["yolov8n.yaml"]
    t = Teacher.from_args(method_args({**METHOD_DEFAULTS, "teacher": True, "teacher_warmup": 2,
                                       "teacher_calib": "recall", "teacher_strong": True}))  # fmt: skip
    batch = _random_batch()
    out = t.preprocess_batch({k: v.clone() for k, v in batch.items()}, _fake_trainer(model, epoch=0))
    assert POS not in out and torch.equal(out["img"], batch["img"]) and t.hist is None  # nothing at all
    out = t.preprocess_batch({k: v.clone() for k, v in batch.items()}, _fake_trainer(model, epoch=1))
    assert POS not in out and torch.equal(out["img"], batch["img"]) and int(t.hist.sum()) == len(batch["cls"])
    out = t.preprocess_batch({k: v.clone() for k, v in batch.items()}, _fake_trainer(model, epoch=2))
    assert {POS, UNC, COUNTS} <= set(out) and not torch.equal(out["img"], batch["img"])  # mining, strong view
    fixed = Teacher.from_args(method_args({**METHOD_DEFAULTS, "teacher": True, "teacher_warmup": 2,
                                           "teacher_calib": "fixed"}))  # fmt: skip
    fixed.preprocess_batch({k: v.clone() for k, v in batch.items()}, _fake_trainer(model, epoch=1))
    assert fixed.hist is None  # fixed thresholds need no calibration pass
    weak = Teacher.from_args(method_args({**METHOD_DEFAULTS, "teacher": True, "teacher_warmup": 0}))  # the default
    out = weak.preprocess_batch({k: v.clone() for k, v in batch.items()}, _fake_trainer(model, epoch=0))
    assert {POS, UNC, COUNTS} <= set(out) and torch.equal(out["img"], batch["img"])  # mining on the teacher's view


def test_no_gradient_reaches_the_teacher(models):
    from copy import deepcopy

    model = deepcopy(models["yolov8n.yaml"])
    with torch.no_grad():
        for m in model.model[-1].cv3:
            m[-1].bias.fill_(-2.0)  # scores around 0.1: the teacher has boxes to give
    trainer = _fake_trainer(model, epoch=5)
    teacher = trainer.ema.ema
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    t = Teacher.from_args(method_args({**METHOD_DEFAULTS, "teacher": True, "teacher_hi": 0.02, "teacher_lo": 0.01,
                                       "teacher_calib": "fixed", "teacher_classes": "any",
                                       "teacher_unmatched": math.inf}))  # fmt: skip
    # every class scores ~0.1 everywhere: 'sure' makes no positive, and the bound would demote every invented one
    batch = t.preprocess_batch(_random_batch(), trainer)
    assert len(batch[POS]) > 0 and not batch[POS].requires_grad and not batch["img"].requires_grad
    crit = criterion(model, teacher=True)
    model.zero_grad()
    loss, _ = crit(model(batch["img"]), batch)
    loss.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    model.zero_grad()


@pytest.mark.parametrize("calib", ["fixed", "recall", "precision"])
def test_batch_bound_holds_for_both_threshold_rules(models, calib):
    """An untrained teacher scoring ~0.1 everywhere passes tau_hi 0.02 on boxes that match no label: the per-batch
    bound demotes them all to uncertain boxes with fixed thresholds as with calibrated ones (before the first
    calibration those are teacher_hi / teacher_lo); teacher_unmatched=inf (as the command line gives it) lifts it.
    The precision rule measures invented boxes on the validation images instead: no per-batch bound."""
    from copy import deepcopy

    model = deepcopy(models["yolov8n.yaml"])
    with torch.no_grad():
        for m in model.model[-1].cv3:
            m[-1].bias.fill_(-2.0)
    keys = {**METHOD_DEFAULTS, "teacher": True, "teacher_hi": 0.02, "teacher_lo": 0.01, "teacher_calib": calib,
            "teacher_classes": "any"}
    batch = _random_batch()
    bounded = Teacher.from_args(method_args(keys)).preprocess_batch(
        {k: v.clone() for k, v in batch.items()}, _fake_trainer(model, epoch=5))
    free = Teacher.from_args(method_args({**keys, "teacher_unmatched": "inf"})).preprocess_batch(
        {k: v.clone() for k, v in batch.items()}, _fake_trainer(model, epoch=5))
    assert len(free[POS]) > 0  # without the bound, the invented boxes are positives
    if calib == "precision":
        assert torch.equal(bounded[POS], free[POS]) and torch.equal(bounded[UNC], free[UNC])
    else:
        assert len(bounded[POS]) == 0 and len(bounded[UNC]) == len(free[POS]) + len(free[UNC])


def test_own_ema_follows_steps_and_restarts_with_ultralytics_ema(models):
    model = DetectionModel("yolov8n.yaml", nc=NC, verbose=False).train()
    trainer = _fake_trainer(model, epoch=0)
    t = Teacher(decay=0.5)
    own = t.teacher_model(trainer)
    assert own is not trainer.ema.ema and all(not p.requires_grad for p in own.parameters())
    w = next(own.parameters())
    w0 = w.clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # an optimizer step
    trainer.ema.update(model)
    assert t.teacher_model(trainer) is own
    d = 0.5 * (1 - math.exp(-1 / 10))
    torch.testing.assert_close(w, w0 * d + (w0 + 1) * (1 - d))
    trainer.ema = ModelEMA(model)  # Ultralytics rebuilt its EMA (resume, NaN recovery): the teacher restarts from it
    fresh = t.teacher_model(trainer)
    assert fresh is not own and torch.equal(next(fresh.parameters()), next(trainer.ema.ema.parameters()))
    assert Teacher().teacher_model(trainer) is trainer.ema.ema  # teacher_decay=0: looked up, never kept
    trainer.ema = None
    assert Teacher().teacher_model(trainer) is None


# ----------------------------------------------------------------------------------------------- keys
@pytest.mark.parametrize("key,value,allowed", [
    ("teacher_hi", 0, r"a number in \(0, 1\)"), ("teacher_hi", 1.0, r"a number in \(0, 1\)"),
    ("teacher_lo", -0.1, r"a number in \(0, 1\)"), ("teacher_warmup", -1, "an integer >= 0"),
    ("teacher_warmup", 1.5, "an integer >= 0"), ("teacher_decay", 1.0, r"a number in \[0, 1\)"),
    ("teacher_calib", "auto", "one of recall|fixed|precision"), ("teacher_recall_hi", 0, r"a number in \(0, 1\)"),
    ("teacher_soft", "maybe", "True or False"), ("teacher_nms", 1.5, r"a number in \(0, 1\)"),
    ("teacher_gt_iou", 0, r"a number in \(0, 1\)"), ("teacher", "yes", "True or False"),
    ("teacher_classes", "all", "one of any|one|sure"), ("teacher_relabel", -1, "an integer >= 0"),
    ("teacher_relabel", 2.5, "an integer >= 0"),
])  # fmt: skip
def test_key_range_errors(key, value, allowed, tmp_path):
    with pytest.raises(PartialConfigError, match=rf"^{key}=.* is invalid: expected {allowed}$"):
        PartialDetectionTrainer(overrides={"data": "shapes", "teacher": True, key: value, "project": str(tmp_path)})


@pytest.mark.parametrize("keys,words", [
    ({"teacher_lo": 0.6, "teacher_hi": 0.5}, "teacher_lo=0.6 is invalid: expected a number <= teacher_hi=0.5"),
    ({"teacher_recall_lo": 0.4}, "teacher_recall_lo=0.4 is invalid: expected a number >= teacher_recall_hi=0.5"),
    ({"comining": True}, "teacher=True cannot be combined with comining=True"),
    ({"distill_model": "yolov8s.pt"}, "teacher=True cannot be combined with distill_model=yolov8s.pt"),
])  # fmt: skip
def test_refused_combinations_one_line(keys, words, capsys, tmp_path, shapes_data):
    from conftest import one_line_error

    args = [f"{k}={v}" for k, v in keys.items()]
    line = one_line_error(capsys, "train", "cfg=teacher.yaml", f"data={shapes_data}", f"project={tmp_path / 'p'}", *args)
    assert words in line
    assert not (tmp_path / "p").exists()  # no run folder left behind


def test_objectness_head_refuses_teacher():
    m = DetectionModel(str(__import__("yolo_partial").assets.folder("models") / "yolov5n-obj.yaml"), nc=NC, verbose=False)
    m.args = train_args(teacher=True)
    with pytest.raises(PartialConfigError, match="^teacher=True is not supported by the objectness head"):
        partial_criterion(m)


def test_teacher_cfg():
    import yaml

    from yolo_partial import assets

    cfg = yaml.safe_load((assets.folder("cfg") / "teacher.yaml").read_text())
    assert cfg["teacher"] is True
    assert Teacher.from_args(method_args({**METHOD_DEFAULTS, **cfg})) is not None
    assert METHOD_DEFAULTS["teacher"] is False


# ----------------------------------------------------------------------------------------------- end to end
TINY = dict(imgsz=64, batch=8, workers=0, plots=False, amp=False, verbose=False, val=True)


class StopAfterFirstEpoch(Exception):
    pass


def test_train_resume_and_stock_checkpoints(shapes_data, tmp_path):
    """teacher + BPR-obj with a hidden manifest: warm-up epoch 1 (calibration only), mining in epoch 2; stopped after
    epoch 1, resumed with the saved thresholds; results.csv columns; checkpoints load in stock Ultralytics."""
    import pandas as pd
    from ultralytics import YOLO

    yolo = YOLO("yolov8n.yaml")

    def stop(trainer):
        raise StopAfterFirstEpoch

    yolo.add_callback("on_fit_epoch_end", stop)
    keys = dict(teacher=True, teacher_warmup=1, drop_neg_obj=0.75)
    with pytest.raises(StopAfterFirstEpoch):
        yolo.train(trainer=PartialDetectionTrainer, data=str(shapes_data), project=str(tmp_path), name="r", epochs=2,
                   **TINY, **keys)  # fmt: skip
    last = tmp_path / "r" / "weights" / "last.pt"
    saved = torch.load(last, weights_only=False)[CHECKPOINT_KEY]["teacher"]
    assert len(saved["tau_hi"]) == len(shapes.CLASS_NAMES) and saved["calibrations"] == 1
    seen = {}

    def at_start(trainer):
        t = next(m for m in trainer.methods if m.NAME == "teacher")
        seen.update(tau_hi=t.tau_hi.tolist(), tau_lo=t.tau_lo.tolist(), epoch=trainer.start_epoch)

    resumed = YOLO(last)
    resumed.add_callback("on_train_start", at_start)
    resumed.train(trainer=PartialDetectionTrainer, resume=True)
    t = resumed.trainer
    assert seen == {"tau_hi": pytest.approx(saved["tau_hi"]), "tau_lo": pytest.approx(saved["tau_lo"]), "epoch": 1}
    df = pd.read_csv(t.csv)
    cols = {"train/teacher_pos", "train/teacher_unc", "train/teacher_hit", "train/teacher_hidden",
            "train/teacher_covered", "teacher_tau_hi", "teacher_tau_lo", "teacher_hit_share", "teacher_cover_share",
            "train/obj_drop"}  # fmt: skip
    assert cols <= set(df.columns), set(df.columns)
    assert list(df["epoch"]) == [1, 2] and df["train/teacher_pos"].iloc[0] == 0 and df["train/teacher_unc"].iloc[0] == 0
    assert df["train/teacher_hidden"].iloc[1] > 0  # the hidden boxes travelled with the images
    from test_train import load_in_stock_ultralytics

    image = next((shapes_data.parent / "partial" / "images" / "val").iterdir())
    assert load_in_stock_ultralytics([t.best, t.last], image).count("loaded") == 2


def test_train_precision_rule_reads_the_validation_loader(shapes_data, tmp_path, monkeypatch):
    """teacher_calib=precision in a real run: at the end of the warm-up epoch the teacher detects on every image of
    Ultralytics' validation loader, and tau_hi comes out of those counts (saved in the checkpoint)."""
    from ultralytics import YOLO

    from yolo_partial.losses import teacher as teacher_mod

    calls = []

    def spy(model, loader, nc, nms):
        calls.append(sum(len(b["img"]) for b in loader))
        return real(model, loader, nc, nms)

    real = teacher_mod.validation_histograms
    monkeypatch.setattr(teacher_mod, "validation_histograms", spy)
    yolo = YOLO("yolov8n.yaml")
    yolo.train(trainer=PartialDetectionTrainer, data=str(shapes_data), project=str(tmp_path), name="p", epochs=1,
               **TINY, teacher=True, teacher_warmup=1, teacher_calib="precision")  # fmt: skip
    n_val = len(list((shapes_data.parent / "partial" / "images" / "val").iterdir()))
    assert calls == [n_val]
    saved = torch.load(yolo.trainer.last, weights_only=False)[CHECKPOINT_KEY]["teacher"]
    assert saved["calibrations"] == 1 and all(HI_RANGE[0] <= v <= 1.0 for v in saved["tau_hi"])


def test_train_yolo26_mines_from_the_first_epoch(shapes_data, tmp_path):
    from ultralytics import YOLO

    yolo = YOLO("yolo26n.yaml")
    yolo.train(trainer=PartialDetectionTrainer, data=str(shapes_data), project=str(tmp_path), name="e2e", epochs=1,
               **TINY, teacher=True, teacher_warmup=0, teacher_calib="fixed", teacher_hi=0.0012, teacher_lo=0.001,
               teacher_classes="any", teacher_unmatched="inf")  # fmt: skip
    # an untrained head scores every class alike ('sure' would make no positive) and matches no label (the bound would
    # demote every positive)
    import pandas as pd

    df = pd.read_csv(yolo.trainer.csv)
    assert df["train/teacher_pos"].iloc[0] > 0 and np.isfinite(df["train/box_loss"].iloc[0])


def test_no_teacher_boxes_on_images_without_labels():
    """An image without any label is verified background (as for BPR and BRL) unless partial_empty=True."""
    from yolo_partial.losses.teacher import Mined

    rows = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.2, 0.9], [1, 1, 0.5, 0.5, 0.2, 0.2, 0.9], [1, 2, 0.3, 0.3, 0.1, 0.1, 0.3]])
    mined = Mined(rows[:2], rows[2:])
    batch = {"batch_idx": torch.tensor([0.0]), "cls": torch.tensor([[0.0]]), "bboxes": torch.tensor([[0.2, 0.2, 0.1, 0.1]])}
    out = Teacher().allowed(mined, batch)
    assert out.pos[:, 0].tolist() == [0] and len(out.unc) == 0
    out = Teacher(partial_empty=True).allowed(mined, batch)
    assert len(out.pos) == 2 and len(out.unc) == 1


def test_invented_boxes_bound():
    """Unmatched detections far above the labelled objects' scores (a collapsing teacher) push tau_hi up until, from
    there on, at most `ratio` unmatched per matched remain; with no such score, above every detection."""
    h = torch.zeros(2, BINS, dtype=torch.long)
    h[0, 300] = 10  # 10 matched at 0.30
    h[1, 100] = 50  # 50 unmatched at 0.10: fine from 0.101 up... but see below
    h[1, 500] = 15  # 15 unmatched at 0.50: above 0.30 there is no matched box to excuse them
    assert float(invented_threshold(h, 2.0)) == pytest.approx(501 / BINS)
    h[0, 600] = 8  # 8 matched at 0.60: from 0.101 up, 15 unmatched <= 2 * 18 matched; above 0.5 too
    assert float(invented_threshold(h, 2.0)) == pytest.approx(101 / BINS)
    assert float(invented_threshold(h, 100.0)) == 0.0  # everything excused
    assert float(invented_threshold(torch.zeros(2, BINS, dtype=torch.long), 2.0)) == 0.0  # no detections


def test_invented_positives_are_demoted_in_the_batch():
    """More positives of a class than teacher_unmatched x its label-matching detections at tau_hi in the batch: they
    become uncertain boxes (ignored, not taught)."""
    from yolo_partial.losses.teacher import Mined, demote_invented

    pos = torch.tensor([[0, 1, 0.2, 0.2, 0.1, 0.1, 0.6], [0, 1, 0.6, 0.2, 0.1, 0.1, 0.7], [0, 1, 0.2, 0.6, 0.1, 0.1, 0.8],
                        [0, 2, 0.8, 0.8, 0.1, 0.1, 0.9]])  # fmt: skip
    mined = Mined(pos, torch.zeros(0, 7))
    batch = {"batch_idx": torch.tensor([0.0, 0.0]), "cls": torch.tensor([[1.0], [2.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.25, 0.25], [0.25, 0.75, 0.25, 0.25]])}  # fmt: skip
    label = [[24, 24, 40, 40, 0.7, 1], [8, 40, 24, 56, 0.7, 2]]  # detections on the two labels (pixels)
    tau = torch.full((NC,), 0.5)
    out = demote_invented(mined, [torch.tensor([label[0]])], batch, (IMGSZ, IMGSZ), tau, 2.0)
    assert out.pos[:, 1].tolist() == [] and len(out.unc) == 4  # class 1: 3 > 2 x 1; class 2: 1 > 2 x 0
    two = torch.tensor([label[0], [24, 24, 40, 41, 0.6, 1], label[1]])
    out = demote_invented(mined, [two], batch, (IMGSZ, IMGSZ), tau, 2.0)
    assert out.pos[:, 1].tolist() == [1, 1, 1, 2] and len(out.unc) == 0  # 3 <= 2 x 2; 1 <= 2 x 1
    low = torch.tensor([label[0][:4] + [0.4, 1], label[1]])  # a match below tau_hi does not count
    out = demote_invented(mined, [low], batch, (IMGSZ, IMGSZ), tau, 2.0)
    assert out.pos[:, 1].tolist() == [2]


def _independent_precision_threshold(matched, unmatched, target, min_count=MIN_BOXES):
    """The documented precision rule from raw scores: the lowest grid score k / BINS from which on, at every grid
    threshold with at least min_count detections at or above it, matched / all >= target; 1.0 when that score has
    fewer than min_count detections at or above it (no judged threshold passed)."""
    grid = lambda v: min(math.floor(v * BINS), BINS - 1)  # noqa: E731
    mb, ub = [grid(v) for v in matched], [grid(v) for v in unmatched]

    def ok(k):
        m, n = sum(b >= k for b in mb), sum(b >= k for b in mb) + sum(b >= k for b in ub)
        return n < min_count or m >= target * n

    k = BINS
    while k > 0 and ok(k - 1):
        k -= 1
    judged = k < BINS and sum(b >= k for b in mb + ub) >= min_count
    return k / BINS if judged else 1.0


def test_precision_threshold_against_sorted_scores():
    """tau_hi by precision on complete labels, against the rule computed from raw scores; one confident false box
    (a running count below MIN_BOXES) does not block the class; a teacher that never reaches the target gets 1.0."""
    g = torch.Generator().manual_seed(0)
    matched = (0.3 + 0.7 * torch.rand(60, generator=g)).tolist()
    unmatched = (0.6 * torch.rand(40, generator=g)).tolist() + [0.97]  # false boxes mostly low, one very confident
    h = torch.zeros(2, BINS, dtype=torch.long)
    h[0] = histogram(torch.tensor(matched), torch.zeros(60, dtype=torch.long), 1)[0]
    h[1] = histogram(torch.tensor(unmatched), torch.zeros(41, dtype=torch.long), 1)[0]
    for target in (0.8, 0.9, 0.95):
        want = _independent_precision_threshold(matched, unmatched, target)
        assert float(precision_threshold(h, target)) == pytest.approx(want, abs=1 / BINS + 1e-6), target
        if target < 0.95:  # the confident false box did not push it above itself (at 0.95 it does: 13 of 14)
            assert 0.3 < want < 0.97
    assert float(precision_threshold(h, 0.9, min_count=1)) == pytest.approx(0.971)  # judged from one box: blocked
    bad = torch.zeros(2, BINS, dtype=torch.long)
    bad[0, 500], bad[1, 500] = 10, 30  # 25 % precision at every threshold
    assert float(precision_threshold(bad, 0.9)) == 1.0
    bad[0, 900] = 3  # precision 1 above 0.9, but judged from too few detections
    assert float(precision_threshold(bad, 0.9)) == 1.0 == _independent_precision_threshold([0.9] * 3, [], 0.9)


def test_precision_calibration_on_validation_images():
    """teacher_calib=precision: after an epoch, tau_hi[c] is the precision rule applied to the teacher's detections
    on the validation loader's images (Ultralytics' uint8 batches), matched box by box against their labels with
    Ultralytics' own NMS and IoU, classes with few detections pooled, clamped; tau_lo keeps the recall rule on the
    training labels."""

    torch.manual_seed(0)  # a model of its own: the shared fixture's weights depend on the tests run before
    model = DetectionModel("yolov8n.yaml", nc=NC, verbose=False)
    with torch.no_grad():
        for m in model.model[-1].cv3:  # class scores spread over (0, 1), so the rule has a curve to cut
            m[-1].weight.mul_(30.0)
            m[-1].bias.zero_()
    val = []
    for seed in (3, 4):
        b = _random_batch(seed=seed)
        b["img"] = (b["img"] * 255).round().to(torch.uint8)
        quant = {**b, "img": b["img"].float() / 255}
        val.append({**_labels_from_teacher(model.eval(), quant), "img": b["img"]})
    trainer = _fake_trainer(model, epoch=0, test_loader=val)
    target = 0.3
    t = Teacher.from_args(method_args({**METHOD_DEFAULTS, "teacher": True, "teacher_calib": "precision",
                                       "teacher_precision": target}))  # fmt: skip
    train = _labels_from_teacher(trainer.ema.ema, _random_batch(seed=1))
    t.preprocess_batch({k: v.clone() for k, v in train.items()}, trainer)
    per_class = [[] for _ in range(NC)]
    boxes, scores = teacher_predictions(trainer.ema.ema, train["img"])
    gt = xywh2xyxy(train["bboxes"] * IMGSZ)
    for c, v in zip(train["cls"].view(-1).long().tolist(),
                    labelled_box_scores(boxes, scores, train["batch_idx"].long(), train["cls"].view(-1).long(),
                                        gt).tolist()):  # fmt: skip
        per_class[c].append(v)
    dets = {c: ([], []) for c in range(NC)}
    for b in val:
        _brute_force_detections(trainer.ema.ema, b["img"].float() / 255, b, dets)
    assert sum(len(u) for _, u in dets.values()) > 0 and sum(len(m) for m, _ in dets.values()) > 0
    t.epoch_end(trainer)
    pooled = ([s for m, _ in dets.values() for s in m], [s for _, u in dets.values() for s in u])
    recall = _independent_thresholds(per_class)
    for c in range(NC):
        m, u = dets[c] if len(dets[c][0]) + len(dets[c][1]) >= MIN_BOXES else pooled
        hi = max(_independent_precision_threshold(m, u, target), HI_RANGE[0])  # measured: no cap at HI_RANGE[1]
        assert float(t.tau_hi[c]) == pytest.approx(hi, abs=1 / BINS + 1e-6), c
        assert float(t.tau_lo[c]) == pytest.approx(min(recall[c][1], hi), abs=1 / BINS + 1e-6), c
    assert ((t.tau_hi > HI_RANGE[0]) & (t.tau_hi < 1.0)).any()  # the rule, not its floor or its 'none', decided


# ----------------------------------------------------------------------------------------------- relabelling pass
def _write_image(path, w, h):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))
    return str(path)


def test_relabel_letterbox_round_trip_on_a_wide_image():
    """A 100 x 50 image at size 64 sits at rows 16-48 of the square; a box given in the image's normalised coordinates
    and placed by hand in the square comes back to the same coordinates, and a box reaching into the padding is
    clipped to the image."""
    from yolo_partial.losses.teacher_relabel import letterbox, to_image

    sq, place = letterbox(np.zeros((50, 100, 3), np.uint8), 64)
    assert sq.shape == (64, 64, 3) and place == (0.0, 16.0, 64.0, 32.0)
    assert (sq[:16] == 114).all() and (sq[16:48] == 0).all() and (sq[48:] == 114).all()
    # image box: centre (0.25, 0.5), size (0.2, 0.4) -> pixels of the 64 x 32 image: centre (16, 16), size (12.8, 12.8)
    # -> in the square: centre (16, 32), normalised (0.25, 0.5, 0.2, 0.2)
    rows = torch.tensor([[0, 2, 0.25, 0.5, 0.2, 0.2, 0.9],
                         [0, 1, 0.5, 0.25, 0.2, 0.25, 0.9]])  # 2nd: y 8-24 px in the square, the image starts at 16
    out = to_image(rows, 64, place)
    assert out[0] == pytest.approx([2, 0.25, 0.5, 0.2, 0.4], abs=1e-6)
    assert out[1] == pytest.approx([1, 0.5, 4 / 32, 0.2, 8 / 32], abs=1e-6)  # clipped to y 0-8 px of the image
    assert len(to_image(torch.tensor([[0, 0, 0.5, 0.05, 0.2, 0.1, 0.9]]), 64, place)) == 0  # all padding: dropped


def test_relabel_images_keeps_confident_unlabelled_boxes_only(tmp_path, monkeypatch):
    """A handmade teacher on two training images (one labelled, one without labels): on the labelled one its box on the
    labelled object is skipped, its box below the class's threshold dropped, its confident box elsewhere returned in
    the image's own coordinates; the image without labels gets nothing (verified background)."""
    from yolo_partial.losses import teacher_relabel

    size = 64
    a, b = _write_image(tmp_path / "a.jpg", 128, 64), _write_image(tmp_path / "b.jpg", 64, 64)
    # image a (128 x 64) at size 64: scale 0.5, rows 16-48 of the square; its label: class 0, pixels x 16-48, y 16-48
    labels = [{"im_file": a, "cls": np.array([[0.0]]), "bboxes": np.array([[0.25, 0.5, 0.25, 0.5]])},
              {"im_file": b, "cls": np.zeros((0, 1)), "bboxes": np.zeros((0, 4))}]  # fmt: skip
    dataset = SimpleNamespace(labels=labels)
    square = {  # square pixels xyxy, class, score
        "on the label": ((8, 24, 24, 40), 0, 0.95),  # = the label (x 8-24, y 24-40 in the square)
        "confident": ((40, 20, 56, 36), 1, 0.9),
        "below tau": ((40, 40, 48, 46), 0, 0.3),
    }
    n_anchor = 8

    def handmade(model, img):
        assert img.shape == (2, 3, size, size) and 0 <= float(img.min()) and float(img.max()) <= 1
        boxes, scores = torch.zeros(2, n_anchor, 4), torch.zeros(2, n_anchor, NC)
        for i, (box, c, s) in enumerate(square.values()):
            for k in range(2):
                boxes[k, i], scores[k, i, c] = torch.tensor(box, dtype=torch.float32), s
        return boxes, scores

    monkeypatch.setattr(teacher_relabel, "teacher_predictions", handmade)
    model = torch.nn.Linear(1, 1)
    t = Teacher(classes="any")
    out = teacher_relabel.relabel_images(t, model, dataset, torch.tensor([0.5, 0.5, 0.5]), size)
    assert set(out) == {a, b} and out[b].shape == (0, 5)
    # confident: square x 40-56, y 20-36 -> image pixels (x2, y-16 then x2): x 80-112, y 8-40 of 128 x 64
    assert out[a].tolist() == [pytest.approx([1, 96 / 128, 24 / 64, 32 / 128, 32 / 64], abs=1e-6)]
    out = teacher_relabel.relabel_images(Teacher(classes="any", partial_empty=True), model, dataset,
                                         torch.tensor([0.2, 0.5, 0.5]), size)  # fmt: skip
    assert len(out[a]) == 2 and len(out[b]) == 3  # below-tau box now passes; the unlabelled image is mined too (all
    # three boxes: none lies on a label there)


def test_relabelled_boxes_are_positives_and_mined_around(models, monkeypatch):
    """Relabelled boxes (marker rows in the batch's labels) leave the labels, become positives scored 1, grouped by
    image with the teacher's own (as the loss needs them), and the teacher's box on a relabelled object is skipped as on
    a label; the batch then goes through the loss."""
    from yolo_partial.hidden_labels import MARKER_SLOT, RELABEL
    from yolo_partial.losses import teacher as teacher_mod

    gt_box = [0.25, 0.25, 0.25, 0.25]
    relabelled = [0.75, 0.75, 0.25, 0.25]  # class 2 at pixels 40-56 of image 1
    batch = {"img": torch.rand(2, 3, IMGSZ, IMGSZ), "batch_idx": torch.tensor([0.0, 1.0, 1.0]),
             "cls": torch.tensor([[0.0], [0.0], [RELABEL * MARKER_SLOT + 2.0]]),
             "bboxes": torch.tensor([gt_box, gt_box, relabelled])}  # fmt: skip

    def handmade(model, img):  # on both images: a confident box on the relabelled object's place, and one elsewhere
        boxes, scores = torch.zeros(2, 4, 4), torch.zeros(2, 4, NC)
        boxes[:, 0], scores[:, 0, 2] = torch.tensor([40.0, 40, 56, 56]), 0.9
        boxes[:, 1], scores[:, 1, 1] = torch.tensor([4.0, 40, 20, 56]), 0.8
        return boxes, scores

    monkeypatch.setattr(teacher_mod, "teacher_predictions", handmade)
    t = Teacher(warmup=0, calib="fixed", classes="any", unmatched=math.inf, relabel=5)
    out = t.preprocess_batch({k: v.clone() for k, v in batch.items()}, _fake_trainer(models["yolov8n.yaml"], epoch=3))
    assert out["cls"].view(-1).tolist() == [0.0, 0.0] and out["relabel_cls"].view(-1).tolist() == [2.0]
    pos = out[POS]
    # image 0: the teacher's two boxes; image 1: the relabelled box (score 1), the teacher's box elsewhere (its box on
    # the relabelled object skipped)
    assert pos[:, 0].tolist() == [0, 0, 1, 1]
    assert pos[:, 1].tolist() == [2, 1, 2, 1] and pos[:, 6].tolist() == pytest.approx([0.9, 0.8, 1.0, 0.8])
    assert pos[2, 2:6].tolist() == pytest.approx(relabelled)  # the relabelled box itself, not the teacher's copy
    m = models["yolov8n.yaml"]
    m.args = train_args(teacher=True)
    loss, items = TeacherLoss(partial_criterion(m))(_student_preds(m, n=2), out)
    assert torch.isfinite(loss).all() and float(items["teacher_pos"]) == pytest.approx(2.0)


def test_train_relabels_and_resumes_with_the_boxes(shapes_data, tmp_path, monkeypatch):
    """teacher_relabel=1 in a real run (thresholds forced low so that a 1-epoch teacher finds boxes): after epoch 1 the
    training images are relabelled, epoch 2's batches carry the boxes as positives (the loader's workers restarted),
    results.csv logs them per image, the checkpoint keeps them for resume, and it loads in stock Ultralytics."""
    import pandas as pd
    from ultralytics import YOLO

    from yolo_partial.losses import teacher as teacher_mod
    from yolo_partial.losses import teacher_relabel

    monkeypatch.setattr(teacher_mod, "HI_RANGE", (0.0, 0.9))
    monkeypatch.setattr(teacher_mod, "precision_threshold", lambda h, p, **k: torch.full(h.shape[:-2], 1e-3))
    monkeypatch.setattr(teacher_relabel, "LO_MIN", 1e-4)
    from ultralytics.data.build import InfiniteDataLoader

    resets, reset = [], InfiniteDataLoader.reset
    monkeypatch.setattr(InfiniteDataLoader, "reset", lambda self: (resets.append(1), reset(self)))
    yolo = YOLO("yolov8n.yaml")
    yolo.train(trainer=PartialDetectionTrainer, data=str(shapes_data), project=str(tmp_path), name="r", epochs=3,
               **{**TINY, "workers": 1}, teacher=True, teacher_warmup=1, teacher_relabel=1, teacher_classes="any",
               teacher_unmatched="inf", teacher_calib="fixed", teacher_hi=0.99, teacher_lo=0.98)  # fmt: skip
    # (fixed thresholds no young teacher reaches: every positive in the batches is a relabelled box)
    t = next(m for m in yolo.trainer.methods if m.NAME == "teacher")
    n_img = len(yolo.trainer.train_loader.dataset.labels)
    per_image = sum(map(len, t.relabelled.values())) / n_img
    assert per_image > 0
    df = pd.read_csv(yolo.trainer.csv)
    # Ultralytics trains on the CPU without workers (so the samples saw the new boxes anyway); with workers, the forked
    # dataset copies must be restarted: once at close_mosaic (epoch 1 here), once after each pass
    assert len(resets) == 3
    # the column: boxes per image of the pass made at the end of that epoch (after epochs 1 and 2; none after the last)
    assert df["teacher_relabel"].iloc[0] > 0 and df["teacher_relabel"].iloc[2] == pytest.approx(per_image)
    assert df["train/teacher_pos"].iloc[0] == 0 and df["train/teacher_pos"].iloc[1] > 0  # warm-up, then relabelled
    saved = torch.load(yolo.trainer.last, weights_only=False)[CHECKPOINT_KEY]["teacher"]["relabelled"]
    assert {f: len(r) for f, r in saved.items()} == {f: len(r) for f, r in t.relabelled.items()}
    restored = Teacher()
    restored.load_state_dict({"relabelled": saved})
    assert all(np.array_equal(restored.relabelled[f], r) for f, r in t.relabelled.items())
    from test_train import load_in_stock_ultralytics

    image = next((shapes_data.parent / "partial" / "images" / "val").iterdir())
    assert load_in_stock_ultralytics([yolo.trainer.last], image).count("loaded") == 1
