"""Tests of the partial-label detection losses (yolo_partial.losses): stock equality, BPR, BRL, SCB and composition.

Expected values are computed here independently (torchvision IoUs, plain BCE / CIoU / DFL, Python-float focal terms);
the code under test only supplies the stock assignment (`loss.assign`), which is Ultralytics' own.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG_DICT
from ultralytics.utils.loss import v8DetectionLoss
from ultralytics.utils.metrics import bbox_iou

from conftest import train_args
from yolo_partial.losses import (
    BackgroundRecalibration,
    BoxPredictionRebalancing,
    PartialDetectionLoss,
    ScaleBalance,
    anchors_per_gt,
    best_gt_iou,
    partial_criterion,
)

IMGSZ, NC, BS = 128, 3, 2
HEADS = ("yolov8n.yaml", "yolo26n.yaml")
STOCK_KEYS = {"yolov8n.yaml": ["box_loss", "cls_loss", "dfl_loss"], "yolo26n.yaml": ["box_loss", "cls_loss", "l1_loss"]}
# image 0 holds two GTs, image 1 one (so image 1 has a padding row after Ultralytics' preprocess)
GT_IDX = torch.tensor([0.0, 0, 1])
GT_CLS = torch.tensor([[0.0], [2], [1]])
GT_XYWH = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])



def _batch(img, empty=False):
    if empty:
        return {"img": img, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    return {"img": img, "batch_idx": GT_IDX.clone(), "cls": GT_CLS.clone(), "bboxes": GT_XYWH.clone()}


def _detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_detach(v) for v in x)
    return x


class Net:
    """One small model with a fixed image batch and its (detached) training predictions."""

    def __init__(self, yaml):
        torch.manual_seed(0)
        self.yaml = yaml
        self.m = DetectionModel(yaml, nc=NC, verbose=False)
        self.m.args = train_args()
        self.m.train()
        self.e2e = getattr(self.m.model[-1], "one2one_cv2", None) is not None
        self.img = torch.rand(BS, 3, IMGSZ, IMGSZ)
        self.batch = _batch(self.img)
        self.empty = _batch(self.img, empty=True)
        with torch.no_grad():
            self.preds = _detach(self.m(self.img))
        # the Detect-style dict that one PartialDetectionLoss (tal_topk=10) sees: the one-to-many branch for YOLO26
        self.pd = self.preds["one2many"] if self.e2e else self.preds

    def criterion(self, stock=False, **kw):
        """Full criterion (E2ELoss for YOLO26) built with method keys `kw`."""
        self.m.args = train_args(**kw)
        return self.m.init_criterion() if stock else partial_criterion(self.m)

    def single(self, stock=False, **kw):
        """One Detect-style loss (no E2E wrapper) built with method keys `kw`."""
        self.m.args = train_args(**kw)
        return v8DetectionLoss(self.m) if stock else PartialDetectionLoss(self.m)

    def fresh_preds(self):
        """Predictions with a graph, for backward passes."""
        self.m.zero_grad(set_to_none=True)
        return self.m(self.img)


@pytest.fixture(scope="module")
def nets():
    return {y: Net(y) for y in HEADS}


# ----------------------------------------------------------------------------------------------- independent references
def _gt_xyxy_per_image(batch, b):
    """(n, 4) pixel xyxy GTs of image b, from the normalised xywh batch."""
    xywh = batch["bboxes"][batch["batch_idx"] == b] * IMGSZ
    return torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)


def _ref_max_iou(boxes_px, batch):
    """(B, A) best-GT IoU with torchvision, image by image; 0 for an image without GT."""
    out = torch.zeros(boxes_px.shape[:2])
    for b in range(boxes_px.shape[0]):
        gt = _gt_xyxy_per_image(batch, b)
        if len(gt):
            out[b] = box_iou(boxes_px[b].double(), gt.double()).amax(1).float()
    return out


def _assignment(net, loss):
    a = loss.assign(net.pd, net.batch)
    iou = _ref_max_iou(a.pred_bboxes.detach() * a.stride_tensor, net.batch)
    return a, iou


def _ref_box_terms(a, keep, reg_max, weight_scale=None):
    """Independent (CIoU, DFL-or-L1) sums over anchors `keep`, weighted by target_scores.sum(-1), / target_scores_sum."""
    tss = a.target_scores.sum().clamp(min=1)
    w = a.target_scores.sum(-1)
    if weight_scale is not None:
        w = w * weight_scale
    w = w[keep]
    pb, tb = a.pred_bboxes[keep], (a.target_bboxes / a.stride_tensor)[keep]
    ciou = bbox_iou(pb, tb, xywh=False, CIoU=True).squeeze(-1)
    box = ((1 - ciou) * w).sum() / tss
    anchors = a.anchor_points.expand(a.fg_mask.shape[0], -1, -1)[keep]
    ltrb = torch.cat((anchors - tb[:, :2], tb[:, 2:] - anchors), 1)
    if reg_max > 1:
        ltrb = ltrb.clamp(0, reg_max - 1 - 0.01)
        left = ltrb.floor().long()
        wl = (left + 1) - ltrb
        logits = a.pred_distri[keep].view(-1, 4, reg_max)
        ce_l = F.cross_entropy(logits.reshape(-1, reg_max), left.view(-1), reduction="none").view(-1, 4)
        ce_r = F.cross_entropy(logits.reshape(-1, reg_max), (left + 1).view(-1), reduction="none").view(-1, 4)
        dist = (ce_l * wl + ce_r * (1 - wl)).mean(-1)
    else:
        stride = a.stride_tensor.expand(a.fg_mask.shape[0], -1, -1)[keep]
        scale = torch.tensor([IMGSZ, IMGSZ, IMGSZ, IMGSZ], dtype=torch.float)
        dist = F.l1_loss(a.pred_distri[keep] * stride / scale, ltrb * stride / scale, reduction="none").mean(-1)
    return box, (dist * w).sum() / tss


def _ref_focal(x, t, gamma=2.0, alpha=0.25):
    p = 1 / (1 + math.exp(-x))
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = t * p + (1 - t) * (1 - p)
    a_t = t * alpha + (1 - t) * (1 - alpha)
    return ce * (1 - p_t) ** gamma * a_t


def _ref_bce(x, t):
    p = 1 / (1 + math.exp(-x))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _ref_brl_bce(x, t, fg, iou, *, brl_t, brl_iou, weight, mode="mirror"):
    """Element-wise BRL on the head's BCE in Python floats: BCE everywhere, BCE's positive term -log p on confident
    confusion anchors (nothing in mode zero), the confusion term times weight."""
    if fg or iou >= brl_iou:
        return _ref_bce(x, t)
    p = 1 / (1 + math.exp(-x))
    if 1 - p >= brl_t:
        v = -math.log(1 - p)
    else:
        v = -math.log(p) if mode == "mirror" else 0.0
    return v * weight


def _ref_brl(x, t, fg, iou, *, brl_t, brl_iou, weight, mode="mirror", gamma=2.0, alpha=0.25):
    """Element-wise BRL (SPEC section 3) on the paper's focal base, in Python floats."""
    if fg or iou >= brl_iou:
        return _ref_focal(x, t, gamma, alpha)
    p = 1 / (1 + math.exp(-x))
    if 1 - p >= brl_t:
        v = -(1 - alpha) * p**gamma * math.log(1 - p)
    elif mode == "mirror":
        v = -(1 - alpha) * (1 - p) ** gamma * math.log(p)
    else:
        v = 0.0
    return v * weight


def _ref_scb_weights(fg, gt_idx, alpha=1.0, beta=3.0):
    """(B, A) SCB weights with Python loops: beta (ln M + alpha) / M on foreground anchors, 1 elsewhere."""
    b_n, a_n = fg.shape
    w = torch.ones(b_n, a_n)
    for b in range(b_n):
        counts = {}
        for i in range(a_n):
            if fg[b, i]:
                counts[int(gt_idx[b, i])] = counts.get(int(gt_idx[b, i]), 0) + 1
        for i in range(a_n):
            if fg[b, i]:
                m = counts[int(gt_idx[b, i])]
                w[b, i] = beta * (math.log(m) + alpha) / m
    return w


def _assert_same(out, ref):
    loss, items = out
    s_loss, s_items = ref
    assert torch.equal(loss, s_loss), (loss, s_loss)
    assert list(items)[: len(s_items)] == list(s_items)
    for k in s_items:
        assert torch.equal(items[k], s_items[k]), k


# ----------------------------------------------------------------------------------------------- 1. defaults are stock
KNOBS_OFF = {
    "defaults": {},
    "bpr_zero": dict(drop_neg_box=0.0, drop_neg_obj=0.0, neg_iou=0.7),
    "bpr_score_zero": dict(drop_mode="score", drop_neg_box=0.0, drop_neg_obj=0.0, neg_iou=0.5),
    "brl_off": dict(brl=False, brl_t=0.9, brl_iou=0.5, brl_weight=2.0, brl_mode="zero", fl_gamma=1.0, fl_alpha=0.5),
    "scb_off": dict(scb=False, scb_alpha=0.5, scb_beta=2.0, scb_box=True),
}


@pytest.mark.parametrize("variant", ["plain", "class_weights", "empty"])
@pytest.mark.parametrize("knobs", list(KNOBS_OFF))
@pytest.mark.parametrize("head", HEADS)
def test_knobs_off_equal_stock(nets, head, knobs, variant, monkeypatch):
    net = nets[head]
    if variant == "class_weights":
        monkeypatch.setattr(net.m, "class_weights", torch.tensor([0.5, 2.0, 1.5]), raising=False)
    batch = net.empty if variant == "empty" else net.batch
    stock = net.criterion(stock=True)(net.preds, batch)
    out = net.criterion(**KNOBS_OFF[knobs])(net.preds, batch)
    _assert_same(out, stock)
    assert list(out[1]) == STOCK_KEYS[head]  # no policy enabled: no extra items
    assert stock[0][1] > 0
    if variant == "empty":
        assert stock[0][0] == 0 and stock[0][2] == 0
    else:
        assert stock[0][0] > 0


def test_class_weights_matter(nets, monkeypatch):
    """Guard for the class_weights variant above: the weights do reach both losses."""
    net = nets["yolov8n.yaml"]
    plain = net.criterion()(net.preds, net.batch)[0]
    monkeypatch.setattr(net.m, "class_weights", torch.tensor([0.5, 2.0, 1.5]), raising=False)
    weighted = net.criterion()(net.preds, net.batch)[0]
    assert not torch.equal(plain[1], weighted[1])
    assert torch.equal(plain[0], weighted[0])


# ----------------------------------------------------------------------------------------------- 2. best_gt_iou
def test_best_gt_iou_matches_torchvision():
    def rand_boxes(*lead):
        xy = torch.rand(*lead, 2) * 100
        return torch.cat((xy, xy + torch.rand(*lead, 2) * 50 + 1), -1)

    boxes = rand_boxes(3, 20)
    gt = rand_boxes(3, 4)
    n_valid = [3, 4, 0]
    mask = torch.zeros(3, 4, 1)
    for b, n in enumerate(n_valid):
        mask[b, :n] = 1
    # padding rows hold boxes that match predictions exactly: the mask alone must exclude them
    gt[0, 3] = boxes[0, 5]
    gt[2] = boxes[2, :4]
    boxes[1, 7] = gt[1, 2]  # an exact hit: IoU 1
    got = best_gt_iou(boxes, gt, mask)
    assert got.shape == (3, 20)
    for b, n in enumerate(n_valid):
        exp = box_iou(boxes[b], gt[b, :n]).amax(1) if n else torch.zeros(20)
        torch.testing.assert_close(got[b], exp, atol=1e-6, rtol=0)
    assert got[1, 7] == pytest.approx(1.0, abs=1e-6)
    assert torch.all(got[2] == 0)
    assert got[0].max() > 0.05  # non-trivial overlaps exist
    # no GT at all in the batch
    assert torch.equal(best_gt_iou(boxes, torch.zeros(3, 0, 4), torch.zeros(3, 0, 1)), torch.zeros(3, 20))


# ----------------------------------------------------------------------------------------------- 3. BPR objectness
@pytest.mark.parametrize("head", HEADS)
def test_bpr_obj_drop_all_matches_reference(nets, head):
    net = nets[head]
    loss = net.single(drop_neg_obj=1.0)
    a, iou = _assignment(net, loss)
    neg_bg = ~a.fg_mask & (iou < 0.3)
    assert 0 < neg_bg.sum() < (~a.fg_mask).sum()  # some background anchors are kept (IoU >= 0.3)
    bce = F.binary_cross_entropy_with_logits(a.pred_scores, a.target_scores, reduction="none")
    tss = a.target_scores.sum().clamp(min=1)
    expected = (bce * (~neg_bg)[..., None].float()).sum() / tss * DEFAULT_CFG_DICT["cls"] * BS

    got, items = loss.loss(net.pd, net.batch)
    stock, s_items = net.single(stock=True).loss(net.pd, net.batch)
    torch.testing.assert_close(got[1], expected, rtol=1e-5, atol=1e-6)
    assert got[1] < stock[1]
    assert torch.equal(got[0], stock[0]) and torch.equal(got[2], stock[2])
    assert items["obj_drop"] == neg_bg.sum() and items["box_drop"] == 0
    assert list(items) == STOCK_KEYS[head] + ["box_drop", "obj_drop"]


@pytest.mark.parametrize("head", HEADS)
def test_bpr_obj_half_count_and_redraw(nets, head):
    net = nets[head]
    loss = net.single(drop_neg_obj=0.5)
    a, iou = _assignment(net, loss)
    n_neg = int((~a.fg_mask & (iou < 0.3)).sum())
    torch.manual_seed(1)
    l1, i1 = loss.loss(net.pd, net.batch)
    torch.manual_seed(2)
    l2, i2 = loss.loss(net.pd, net.batch)
    assert i1["obj_drop"] == i2["obj_drop"] == math.floor(0.5 * n_neg + 0.5)
    assert not torch.equal(l1[1], l2[1])  # a different random half was dropped
    assert torch.equal(l1[0], l2[0])


def test_bpr_random_masks_redrawn_with_same_count():
    torch.manual_seed(0)
    max_iou = torch.rand(2, 50)
    fg = torch.rand(2, 50) < 0.2
    cand = ~fg & (max_iou < 0.3)
    bpr = BoxPredictionRebalancing(0.0, 0.5, "random", 0.3)
    torch.manual_seed(1)
    _, m1 = bpr.drop_masks(max_iou, fg, None)
    torch.manual_seed(2)
    _, m2 = bpr.drop_masks(max_iou, fg, None)
    n = int(cand.sum())
    assert not torch.equal(m1, m2)
    assert m1.sum() == m2.sum() == math.floor(0.5 * n + 0.5)
    assert not (m1 & ~cand).any() and not (m2 & ~cand).any()
    # fraction 1.0 drops every negative, and only negatives
    box_all, obj_all = BoxPredictionRebalancing(1.0, 1.0, "random", 0.3).drop_masks(max_iou, fg, None)
    assert torch.equal(obj_all, cand)
    assert torch.equal(box_all, fg & (max_iou < 0.3))


def test_bpr_round_half_up_and_score_mode():
    max_iou = torch.tensor([[0.05, 0.5, 0.1, 0.2, 0.05, 0.25]])
    fg = torch.tensor([[False, False, True, False, False, False]])
    scores = torch.tensor([[0.9, 0.95, 0.99, 0.3, 0.6, 0.8]])
    # negative background anchors: 0 (0.9), 3 (0.3), 4 (0.6), 5 (0.8); anchor 1 has IoU 0.5, anchor 2 is foreground
    T, F_ = True, False
    box, obj = BoxPredictionRebalancing(0.5, 0.5, "score", 0.3).drop_masks(max_iou, fg, scores)
    assert obj.tolist() == [[T, F_, F_, F_, F_, T]]  # round(2.0) = 2 highest scores
    assert box.tolist() == [[F_, F_, T, F_, F_, F_]]  # round_half_up(0.5) = 1
    _, obj = BoxPredictionRebalancing(0.0, 0.75, "score", 0.3).drop_masks(max_iou, fg, scores)
    assert obj.tolist() == [[T, F_, F_, F_, T, T]]
    box, _ = BoxPredictionRebalancing(0.4, 0.0, "score", 0.3).drop_masks(max_iou, fg, scores)
    assert not box.any()  # round(0.4) = 0
    # half of 5 candidates rounds up to 3 (not banker's rounding to 2)
    five = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.9]])
    _, obj = BoxPredictionRebalancing(0.0, 0.5, "random", 0.3).drop_masks(five, torch.zeros(1, 6, dtype=torch.bool), None)
    assert obj.sum() == 3 and not obj[0, 5]


def test_bpr_score_mode_through_loss(nets):
    """drop_mode=score removes the highest-scoring negative background anchors (by best class probability)."""
    net = nets["yolov8n.yaml"]
    loss = net.single(drop_neg_obj=0.25, drop_mode="score")
    a, iou = _assignment(net, loss)
    cand = ~a.fg_mask & (iou < 0.3)
    k = math.floor(0.25 * int(cand.sum()) + 0.5)
    score = a.pred_scores.sigmoid().amax(-1)
    flat = torch.where(cand, score, torch.full_like(score, -1.0)).flatten()
    drop = torch.zeros(flat.numel(), dtype=torch.bool)
    drop[flat.topk(k).indices] = True
    drop = drop.view_as(cand)
    bce = F.binary_cross_entropy_with_logits(a.pred_scores, a.target_scores, reduction="none")
    expected = (bce * (~drop)[..., None].float()).sum() / a.target_scores.sum().clamp(min=1) * DEFAULT_CFG_DICT["cls"] * BS
    got, items = loss.loss(net.pd, net.batch)
    torch.testing.assert_close(got[1], expected, rtol=1e-5, atol=1e-6)
    assert items["obj_drop"] == k


# ----------------------------------------------------------------------------------------------- 4. BPR box
@pytest.mark.parametrize("head", HEADS)
def test_bpr_box_drop_all_matches_reference(nets, head):
    net = nets[head]
    a, iou = _assignment(net, net.single())
    fg_iou = iou[a.fg_mask].unique().sort().values
    assert len(fg_iou) >= 2
    mid = len(fg_iou) // 2
    neg_iou = float((fg_iou[mid - 1] + fg_iou[mid]) / 2)  # half the foreground anchors are negative
    loss = net.single(drop_neg_box=1.0, neg_iou=neg_iou)
    a = loss.assign(net.pd, net.batch)
    keep = a.fg_mask & (iou >= neg_iou)
    dropped = a.fg_mask & (iou < neg_iou)
    assert keep.any() and dropped.any()
    box, dist = _ref_box_terms(a, keep, net.m.model[-1].reg_max)

    got, items = loss.loss(net.pd, net.batch)
    stock, _ = net.single(stock=True).loss(net.pd, net.batch)
    torch.testing.assert_close(got[0], box * DEFAULT_CFG_DICT["box"] * BS, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[2], dist * DEFAULT_CFG_DICT["dfl"] * BS, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[1], stock[1])
    assert items["box_drop"] == dropped.sum() and items["obj_drop"] == 0
    # and the reference reproduces stock when nothing is dropped
    box_all, dist_all = _ref_box_terms(a, a.fg_mask, net.m.model[-1].reg_max)
    torch.testing.assert_close(stock[0], box_all * DEFAULT_CFG_DICT["box"] * BS, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stock[2], dist_all * DEFAULT_CFG_DICT["dfl"] * BS, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", HEADS)
def test_bpr_box_all_negative(nets, head):
    """neg_iou=0.99: every prediction is negative, so drop_neg_box=1 empties the box terms and leaves cls alone."""
    net = nets[head]
    a, iou = _assignment(net, net.single())
    assert iou.max() < 0.99
    n_fg = int(a.fg_mask.sum())
    assert n_fg > 0
    got, items = net.single(drop_neg_box=1.0, neg_iou=0.99).loss(net.pd, net.batch)
    stock, _ = net.single(stock=True).loss(net.pd, net.batch)
    assert got[0] == 0 and got[2] == 0
    assert torch.equal(got[1], stock[1])
    assert items["box_drop"] == n_fg
    # through the full criterion (E2ELoss for YOLO26) as well
    full = net.criterion(drop_neg_box=1.0, neg_iou=0.99)(net.preds, net.batch)[0]
    full_stock = net.criterion(stock=True)(net.preds, net.batch)[0]
    assert full[0] == 0 and full[2] == 0
    assert torch.equal(full[1], full_stock[1])


# ----------------------------------------------------------------------------------------------- 5. BRL
BRL_LOGITS = torch.tensor(
    [[[0.8, -1.2, 2.2], [2.0, -1.0, 0.3], [1.5, -0.5, 0.05], [-2.5, -0.2, -0.7]]], dtype=torch.float64
)
BRL_TARGETS = torch.tensor([[[0.7, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
BRL_FG = torch.tensor([[True, False, False, False]])
BRL_IOU = torch.tensor([[0.6, 0.05, 0.3, 0.02]], dtype=torch.float64)  # confusion anchors: 1 and 3


def _ref_brl_tensor(**kw):
    out = torch.zeros(1, 4, 3, dtype=torch.float64)
    for i in range(4):
        for c in range(3):
            out[0, i, c] = _ref_brl(
                float(BRL_LOGITS[0, i, c]), float(BRL_TARGETS[0, i, c]), bool(BRL_FG[0, i]), float(BRL_IOU[0, i]), **kw
            )
    return out


@pytest.mark.parametrize("brl_t,weight", [(0.5, 0.1), (0.3, 0.1), (0.5, 1.0), (0.9, 0.25)])
def test_brl_elementwise_reference(brl_t, weight):
    got, stats = BackgroundRecalibration(brl_t, 0.1, weight, "mirror", 2.0, 0.25, base="focal", gain=1.0).loss(
        BRL_LOGITS, BRL_TARGETS, BRL_IOU, BRL_FG
    )
    exp = _ref_brl_tensor(brl_t=brl_t, brl_iou=0.1, weight=weight)
    torch.testing.assert_close(got, exp, atol=1e-6, rtol=0)
    p = BRL_LOGITS.sigmoid()
    n_recal = int(((p[0, [1, 3]] > 1 - brl_t).any(-1)).sum())
    assert stats["brl_conf"] == 2
    assert stats["brl_recal"] == n_recal


def test_brl_stats_handmade():
    _, stats = BackgroundRecalibration(0.5, 0.1, 0.1, "mirror", 2.0, 0.25, base="focal", gain=1.0).loss(BRL_LOGITS, BRL_TARGETS, BRL_IOU, BRL_FG)
    # anchor 1 has p > 0.5 on classes 0 and 2; anchor 3 has every p < 0.5
    assert stats["brl_conf"] == 2 and stats["brl_recal"] == 1
    _, stats = BackgroundRecalibration(0.5, 0.4, 0.1, "mirror", 2.0, 0.25, base="focal", gain=1.0).loss(BRL_LOGITS, BRL_TARGETS, BRL_IOU, BRL_FG)
    # brl_iou 0.4 also makes anchor 2 (IoU 0.3, p > 0.5 on class 0) a recalibrated confusion anchor
    assert stats["brl_conf"] == 3 and stats["brl_recal"] == 2


def test_brl_t0_weight1_is_plain_focal():
    got, stats = BackgroundRecalibration(0.0, 0.1, 1.0, "mirror", 2.0, 0.25, base="focal", gain=1.0).loss(BRL_LOGITS, BRL_TARGETS, BRL_IOU, BRL_FG)
    exp = torch.zeros(1, 4, 3, dtype=torch.float64)
    for i in range(4):
        for c in range(3):
            exp[0, i, c] = _ref_focal(float(BRL_LOGITS[0, i, c]), float(BRL_TARGETS[0, i, c]))
    torch.testing.assert_close(got, exp, atol=1e-6, rtol=0)
    assert stats["brl_recal"] == 0


def test_brl_zero_mode():
    mirror, _ = BackgroundRecalibration(0.5, 0.1, 0.1, "mirror", 2.0, 0.25, base="focal", gain=1.0).loss(BRL_LOGITS, BRL_TARGETS, BRL_IOU, BRL_FG)
    zero, stats = BackgroundRecalibration(0.5, 0.1, 0.1, "zero", 2.0, 0.25, base="focal", gain=1.0).loss(BRL_LOGITS, BRL_TARGETS, BRL_IOU, BRL_FG)
    recal = torch.zeros(1, 4, 3, dtype=torch.bool)
    recal[0, 1, 0] = recal[0, 1, 2] = True  # confusion anchor 1, p > 0.5
    assert torch.all(zero[recal] == 0)
    assert torch.all(mirror[recal] > 0)
    assert torch.equal(zero[~recal], mirror[~recal])
    torch.testing.assert_close(zero, _ref_brl_tensor(brl_t=0.5, brl_iou=0.1, weight=0.1, mode="zero"), atol=1e-6, rtol=0)
    assert stats["brl_recal"] == 1


@pytest.mark.parametrize("logit,sign", [(1.0, -1), (2.5, -1), (-1.0, 1), (-0.1, 1)])
def test_brl_gradient_sign(logit, sign):
    """Mirror mode on a confusion anchor: with p > 1 - t descent raises p (negative gradient); else it lowers p."""
    x = torch.tensor([[[logit]]], requires_grad=True)
    brl = BackgroundRecalibration(0.5, 0.1, 0.1, "mirror", 2.0, 0.25, base="focal", gain=1.0)
    loss, _ = brl.loss(x, torch.zeros(1, 1, 1), torch.tensor([[0.0]]), torch.tensor([[False]]))
    loss.sum().backward()
    assert x.grad.item() * sign > 0
    # and it matches the finite difference of the Python reference
    h = 1e-3
    ref = lambda v: _ref_brl(v, 0.0, False, 0.0, brl_t=0.5, brl_iou=0.1, weight=0.1)  # noqa: E731
    assert x.grad.item() == pytest.approx((ref(logit + h) - ref(logit - h)) / (2 * h), rel=1e-3, abs=1e-7)


@pytest.mark.parametrize("head", HEADS)
def test_brl_through_loss_matches_reference(nets, head):
    """The cls term with brl=True is the Python-float BRL over every anchor x class, / target_scores_sum."""
    net = nets[head]
    kw = dict(brl_t=0.995, brl_iou=0.2, brl_weight=0.5)  # no p within 1e-5 of 1 - t here
    loss = net.single(brl=True, brl_base="focal", brl_gain=1.0, **kw)
    a, iou = _assignment(net, loss)
    logits, targets, fg = a.pred_scores.double(), a.target_scores.double(), a.fg_mask
    total, n_recal = 0.0, 0
    for b in range(BS):
        for i in range(logits.shape[1]):
            f, u = bool(fg[b, i]), float(iou[b, i])
            xs = logits[b, i].tolist()
            ts = targets[b, i].tolist()
            total += sum(
                _ref_brl(x, t, f, u, brl_t=kw["brl_t"], brl_iou=kw["brl_iou"], weight=kw["brl_weight"])
                for x, t in zip(xs, ts)
            )
            n_recal += (not f and u < kw["brl_iou"]) and any(1 / (1 + math.exp(-x)) > 1 - kw["brl_t"] for x in xs)
    tss = float(a.target_scores.sum().clamp(min=1))
    got, items = loss.loss(net.pd, net.batch)
    assert float(got[1]) == pytest.approx(total / tss * DEFAULT_CFG_DICT["cls"] * BS, rel=1e-4)
    assert items["brl_conf"] == int((~fg & (iou < kw["brl_iou"])).sum())
    assert items["brl_recal"] == n_recal and n_recal > 0
    stock, _ = net.single(stock=True).loss(net.pd, net.batch)
    assert torch.equal(got[0], stock[0]) and torch.equal(got[2], stock[2])


@pytest.mark.parametrize("head", HEADS)
def test_brl_full_criterion_backward(nets, head):
    net = nets[head]
    crit = net.criterion(brl=True)
    loss, items = crit(net.fresh_preds(), net.batch)
    assert torch.isfinite(loss).all() and loss.sum() > 0
    assert list(items) == STOCK_KEYS[head] + ["brl_conf", "brl_recal"]
    loss.sum().backward()
    grads = [p.grad for p in net.m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("brl_t,weight,mode", [(0.5, 0.1, "mirror"), (0.3, 1.0, "mirror"), (0.9, 0.25, "zero")])
def test_brl_bce_elementwise_reference(brl_t, weight, mode):
    got, stats = BackgroundRecalibration(brl_t, 0.1, weight, mode, 2.0, 0.25).loss(BRL_LOGITS, BRL_TARGETS, BRL_IOU, BRL_FG)
    exp = torch.zeros(1, 4, 3, dtype=torch.float64)
    for i in range(4):
        for c in range(3):
            exp[0, i, c] = _ref_brl_bce(float(BRL_LOGITS[0, i, c]), float(BRL_TARGETS[0, i, c]), bool(BRL_FG[0, i]),
                                        float(BRL_IOU[0, i]), brl_t=brl_t, brl_iou=0.1, weight=weight, mode=mode)
    torch.testing.assert_close(got, exp, atol=1e-9, rtol=0)
    assert stats["brl_conf"] == 2


@pytest.mark.parametrize("head", HEADS)
def test_brl_bce_neutral_knobs_equal_stock(nets, head):
    """brl_base=bce with t=0 and weight 1 changes nothing: the head's own loss, exactly."""
    net = nets[head]
    got, _ = net.criterion(brl=True, brl_t=0.0, brl_weight=1.0)(net.preds, net.batch)
    stock, _ = net.criterion(stock=True)(net.preds, net.batch)
    assert torch.equal(got, stock)


@pytest.mark.parametrize("head", HEADS)
def test_brl_bce_through_loss_matches_reference(nets, head):
    """Only confusion anchors differ from the stock BCE, as the Python-float reference computes them."""
    net = nets[head]
    kw = dict(brl_t=0.995, brl_iou=0.2, brl_weight=0.5)
    loss = net.single(brl=True, **kw)
    a, iou = _assignment(net, loss)
    total = sum(_ref_brl_bce(x, t, bool(a.fg_mask[b, i]), float(iou[b, i]), brl_t=kw["brl_t"], brl_iou=kw["brl_iou"],
                             weight=kw["brl_weight"])
                for b in range(BS) for i in range(a.pred_scores.shape[1])
                for x, t in zip(a.pred_scores[b, i].double().tolist(), a.target_scores[b, i].double().tolist()))
    got, _ = loss.loss(net.pd, net.batch)
    tss = float(a.target_scores.sum().clamp(min=1))
    assert float(got[1]) == pytest.approx(total / tss * DEFAULT_CFG_DICT["cls"] * BS, rel=1e-4)


@pytest.mark.parametrize("head", HEADS)
def test_brl_focal_gain_matches_stock_magnitude_on_the_first_batch(nets, head):
    net = nets[head]
    loss = net.single(brl=True, brl_base="focal")
    got, _ = loss.loss(net.pd, net.batch)
    stock, _ = net.single(stock=True).loss(net.pd, net.batch)
    assert float(got[1]) == pytest.approx(float(stock[1]), rel=1e-4)  # the rule: equal on the first batch
    gain = loss.method("brl").gain
    assert gain > 1  # focal terms of a fresh head are smaller than its BCE terms
    loss.loss(_detach(net.m(torch.rand_like(net.img))) if not net.e2e else net.pd, net.batch)
    assert loss.method("brl").gain == gain  # measured once, then fixed
    fixed = net.single(brl=True, brl_base="focal", brl_gain=2.0)
    fixed.loss(net.pd, net.batch)
    assert fixed.method("brl").gain == 2.0


def test_prior_iou_matches_an_independent_computation(nets):
    from yolo_partial.losses.method import PRIOR_SCALE, Terms

    net = nets["yolov8n.yaml"]
    loss = net.single()
    a = loss.assign(net.pd, net.batch)
    t = Terms(a, a.pred_scores, a.target_scores, a.fg_mask, a.target_scores)
    pts, st = a.anchor_points * a.stride_tensor, a.stride_tensor
    prior = torch.cat((pts - st * PRIOR_SCALE / 2, pts + st * PRIOR_SCALE / 2), 1)  # (A, 4) pixels
    exp = _ref_max_iou(prior[None].expand(BS, -1, -1).contiguous(), net.batch)
    torch.testing.assert_close(t.prior_iou(), exp, atol=1e-5, rtol=0)
    assert t.region_iou("prior") is t.prior_iou() and t.region_iou("pred") is t.max_iou()


@pytest.mark.parametrize("head", HEADS)
def test_brl_prior_region_counts_prior_confusion(nets, head):
    from yolo_partial.losses.method import Terms

    net = nets[head]
    loss = net.single(brl=True, brl_region="prior", brl_iou=0.3)
    a = loss.assign(net.pd, net.batch)
    prior = Terms(a, a.pred_scores, a.target_scores, a.fg_mask, a.target_scores).prior_iou()
    _, items = loss.loss(net.pd, net.batch)
    assert items["brl_conf"] == int((~a.fg_mask & (prior < 0.3)).sum())


@pytest.mark.parametrize("head", HEADS)
def test_empty_images_are_verified_background_unless_partial_empty(nets, head):
    """An image without labels gets no confusion anchors and no BPR drops by default; partial_empty relaxes it too."""
    net = nets[head]
    batch = {**net.batch, "batch_idx": torch.zeros(2), "cls": GT_CLS[:2].clone(), "bboxes": GT_XYWH[:2].clone()}
    n_anchor = net.pd["scores"].shape[-1]
    for empty_too in (False, True):
        _, items = net.single(brl=True, drop_neg_obj=1.0, partial_empty=empty_too).loss(net.pd, batch)
        a = net.single().assign(net.pd, batch)
        in_image0 = int((~a.fg_mask[0]).sum())
        if empty_too:
            assert items["obj_drop"] > in_image0 and items["brl_conf"] > 0
        else:
            assert items["obj_drop"] <= in_image0 and items["brl_conf"] <= in_image0
        assert items["obj_drop"] <= in_image0 + (n_anchor if empty_too else 0)


# ----------------------------------------------------------------------------------------------- 6. SCB
SCB_FG = torch.tensor(
    [[1, 1, 0, 1, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0, 0, 1]], dtype=torch.bool
)
SCB_IDX = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 0], [0, 1, 1, 2, 2, 0, 0, 1]])
# image 0: GT0 <- anchors 0, 1, 3 (3), GT1 <- none (anchors 4, 5 are background), GT2 <- anchor 6 (1)
# image 1: GT1 <- anchors 1, 2, 7 (3), GT0 and GT2 <- none (only background anchors point at them)
SCB_M = [[3.0, 0.0, 1.0], [0.0, 3.0, 0.0]]


def test_anchors_per_gt_handmade():
    got = anchors_per_gt(SCB_FG, SCB_IDX, 3)
    assert got.tolist() == SCB_M


@pytest.mark.parametrize("alpha,beta", [(1.0, 3.0), (0.5, 2.0)])
def test_scale_balance_weights_handmade(alpha, beta):
    got = ScaleBalance(alpha, beta, False).anchor_weights(SCB_FG, SCB_IDX, 3)
    w3, w1 = beta * (math.log(3) + alpha) / 3, beta * (math.log(1) + alpha) / 1
    exp = torch.tensor([[w3, w3, 1, w3, 1, 1, w1, 1], [1, w3, w3, 1, 1, 1, 1, w3]])
    torch.testing.assert_close(got.float(), exp, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.float(), _ref_scb_weights(SCB_FG, SCB_IDX, alpha, beta), atol=1e-6, rtol=0)


@pytest.mark.parametrize("head", HEADS)
def test_scb_through_loss(nets, head):
    net = nets[head]
    stock = net.criterion(stock=True)(net.preds, net.batch)[0]
    cls_only = net.criterion(scb=True)(net.preds, net.batch)[0]
    with_box = net.criterion(scb=True, scb_box=True)(net.preds, net.batch)[0]
    assert not torch.equal(cls_only[1], stock[1])
    assert torch.equal(cls_only[0], stock[0]) and torch.equal(cls_only[2], stock[2])
    assert not torch.equal(with_box[0], stock[0])
    assert torch.equal(with_box[1], cls_only[1])

    # single loss against an independent computation of the weights (Python loops over the assignment)
    loss = net.single(scb=True, scb_box=True)
    a = loss.assign(net.pd, net.batch)
    w = _ref_scb_weights(a.fg_mask, a.target_gt_idx)
    assert (w[a.fg_mask] != 1).any()
    bce = F.binary_cross_entropy_with_logits(a.pred_scores, a.target_scores, reduction="none")
    tss = a.target_scores.sum().clamp(min=1)
    got, items = loss.loss(net.pd, net.batch)
    torch.testing.assert_close(got[1], (bce * w[..., None]).sum() / tss * DEFAULT_CFG_DICT["cls"] * BS, rtol=1e-5, atol=1e-6)
    box, dist = _ref_box_terms(a, a.fg_mask, net.m.model[-1].reg_max, weight_scale=w)
    torch.testing.assert_close(got[0], box * DEFAULT_CFG_DICT["box"] * BS, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[2], dist * DEFAULT_CFG_DICT["dfl"] * BS, rtol=1e-5, atol=1e-6)
    assert list(items) == STOCK_KEYS[head]


@pytest.mark.parametrize("head", HEADS)
def test_scb_empty_batch_equals_stock(nets, head):
    """A batch without any GT has no foreground anchors: every SCB weight is 1, so the loss is stock's."""
    net = nets[head]
    stock = net.criterion(stock=True)(net.preds, net.empty)
    out = net.criterion(scb=True, scb_box=True)(net.preds, net.empty)
    _assert_same(out, stock)


# ----------------------------------------------------------------------------------------------- 7. composition
ALL_ON = dict(drop_neg_box=0.5, drop_neg_obj=0.5, brl=True, scb=True, scb_box=True)


@pytest.mark.parametrize("mode", ["random", "score"])
@pytest.mark.parametrize("head", HEADS)
def test_all_policies_compose(nets, head, mode):
    net = nets[head]
    loss, items = net.criterion(drop_mode=mode, **ALL_ON)(net.fresh_preds(), net.batch)
    assert list(items) == STOCK_KEYS[head] + ["brl_conf", "brl_recal", "box_drop", "obj_drop"]
    assert torch.isfinite(loss).all() and loss.sum() > 0
    assert all(torch.isfinite(v) for v in items.values())
    assert items["obj_drop"] > 0 and items["brl_conf"] > 0
    loss.sum().backward()
    grads = [p.grad for p in net.m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("head", HEADS)
def test_bpr_brl_empty_batch(nets, head):
    """BPR and BRL on a batch without GT: verified background by default (nothing relaxed, the stock loss); with
    partial_empty every anchor is a negative / confusion anchor; the loss stays finite."""
    net = nets[head]
    n_anchors = net.pd["scores"].shape[-1]
    loss, items = net.criterion(drop_neg_obj=0.5, drop_neg_box=0.5, brl=True)(net.preds, net.empty)
    assert torch.equal(loss, net.criterion(stock=True)(net.preds, net.empty)[0])
    assert items["brl_conf"] == 0 and items["obj_drop"] == 0
    loss, items = net.criterion(drop_neg_obj=0.5, drop_neg_box=0.5, brl=True, partial_empty=True)(net.preds, net.empty)
    assert torch.isfinite(loss).all()
    assert loss[0] == 0 and loss[2] == 0
    assert items["brl_conf"] == BS * n_anchors
    assert items["obj_drop"] == math.floor(0.5 * BS * n_anchors + 0.5) and items["box_drop"] == 0


def test_scb_inside_count_falls_monotonically_with_object_size():
    """scb_count=inside: W_i of one object falls strictly as it grows from 8 to 120 px (assigned counts cap at 10)."""
    from yolo_partial.losses.scb import anchors_inside_gt

    imgsz, strides = 160, (8, 16, 32)
    points = torch.cat([torch.stack(torch.meshgrid(torch.arange(imgsz // s), torch.arange(imgsz // s), indexing="xy"),
                                    -1).reshape(-1, 2).float().add(0.5) * s for s in strides])  # (A, 2) pixels
    scb = ScaleBalance(1.0, 3.0, False, "inside")
    weights = []
    for side in range(8, 121, 8):
        c = 80.3  # off the anchor grid, so no centre sits on an edge
        gt = torch.tensor([[[c - side / 2, c - side / 2, c + side / 2, c + side / 2]]])
        m = anchors_inside_gt(points, gt, torch.ones(1, 1, 1))
        inside = (points[:, 0] > gt[0, 0, 0]) & (points[:, 0] < gt[0, 0, 2]) & (points[:, 1] > gt[0, 0, 1]) & (points[:, 1] < gt[0, 0, 3])
        assert m.item() == inside.sum().item()  # independent count
        fg = torch.zeros(1, len(points), dtype=torch.bool)
        fg[0, :3] = True
        w = scb.anchor_weights(fg, torch.zeros(1, len(points), dtype=torch.long), 1, m)
        weights.append(float(w[0, 0]))
    assert all(a > b for a, b in zip(weights, weights[1:])), weights
