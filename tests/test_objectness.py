"""The YOLOv5 objectness head (cfg/models/yolov5*-obj.yaml) and its loss (yolo_partial.losses.objectness).

Expected values come from computations written here: a plain YOLOv5 ComputeLoss (matches by its repeat-and-mask
recipe, a per-match Python loop for objectness targets, CIoU from its formula) and a hand-derived match list; the code
under test is only called through its public entry points.
"""

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou
from ultralytics.nn.tasks import DetectionModel

from conftest import train_args
from yolo_partial.errors import PartialConfigError
from yolo_partial.losses import ObjectnessDetectionLoss, partial_criterion
from yolo_partial.models import ObjectnessDetect, resolve_model

ANCHORS = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]).float()
ANCHORS = ANCHORS.view(3, 3, 2)
STRIDES = (8.0, 16.0, 32.0)
BALANCE = (4.0, 1.0, 0.4)


def fake_model(nc, imgsz, **keys):
    """What the loss reads from a model: the head (nc, anchors, strides) and args."""
    head = ObjectnessDetect(nc=nc, ch=(8, 8, 8))
    head.stride = torch.tensor(STRIDES)
    args = train_args(imgsz=imgsz, **keys)
    return SimpleNamespace(model=[head], args=args)


def random_maps(bs, imgsz, nc, scale=1.0, grad=False):
    """Raw maps (B, 3, H, W, 5 + nc) of the three levels."""
    shapes = [(bs, 3, imgsz // int(s), imgsz // int(s), 5 + nc) for s in STRIDES]
    return [(torch.randn(shape) * scale).requires_grad_(grad) for shape in shapes]


def batch_of(targets):
    return {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:6]}


def ciou(b1, b2, eps=1e-7):
    """Complete IoU of (n, 4) xywh box pairs, from its definition."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = b1.unbind(-1), b2.unbind(-1)
    iw = (torch.minimum(x1 + w1 / 2, x2 + w2 / 2) - torch.maximum(x1 - w1 / 2, x2 - w2 / 2)).clamp(min=0)
    ih = (torch.minimum(y1 + h1 / 2, y2 + h2 / 2) - torch.maximum(y1 - h1 / 2, y2 - h2 / 2)).clamp(min=0)
    inter = iw * ih
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    cw = torch.maximum(x1 + w1 / 2, x2 + w2 / 2) - torch.minimum(x1 - w1 / 2, x2 - w2 / 2)
    ch = torch.maximum(y1 + h1 / 2, y2 + h2 / 2) - torch.minimum(y1 - h1 / 2, y2 - h2 / 2)
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = 4 / math.pi**2 * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    alpha = v / (v - iou + 1 + eps)
    return iou - (rho2 / (cw**2 + ch**2 + eps) + v * alpha)


def yolov5_matches(maps, targets):
    """YOLOv5's build_targets, its recipe: targets repeated per anchor, ratio filter, 5 offset copies masked."""
    nt, out = targets.shape[0], []
    ai = torch.arange(3).float().view(3, 1).repeat(1, nt)
    ti = torch.arange(nt).float().view(1, nt).repeat(3, 1)  # which GT, for SCB's per-GT counts
    tt = torch.cat((targets.repeat(3, 1, 1), ai[..., None], ti[..., None]), 2)  # (na, nt, 8)
    off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]).float() * 0.5
    for i, p in enumerate(maps):
        anchors = ANCHORS[i] / STRIDES[i]
        h, w = p.shape[2:4]
        gain = torch.tensor([1, 1, w, h, w, h, 1, 1]).float()
        t = tt * gain
        r = t[..., 4:6] / anchors[:, None]
        t = t[torch.max(r, 1 / r).max(2)[0] < 4.0]
        gxy, gxi = t[:, 2:4], gain[[2, 3]] - t[:, 2:4]
        j, k = ((gxy % 1 < 0.5) & (gxy > 1)).T
        l, m = ((gxi % 1 < 0.5) & (gxi > 1)).T
        sel = torch.stack((torch.ones_like(j), j, k, l, m))
        t, offsets = t.repeat((5, 1, 1))[sel], (torch.zeros_like(gxy)[None] + off[:, None])[sel]
        gij = (t[:, 2:4] - offsets).long()
        out.append({
            "b": t[:, 0].long(), "c": t[:, 1].long(), "a": t[:, 6].long(), "gt": t[:, 7].long(),
            "gi": gij[:, 0].clamp(0, w - 1), "gj": gij[:, 1].clamp(0, h - 1),
            "tbox": torch.cat((t[:, 2:4] - gij, t[:, 4:6]), 1), "anchor": anchors[t[:, 6].long()],
        })  # fmt: skip
    return out


def yolov5_loss(maps, targets, nc, imgsz, matches=None):
    """YOLOv5's ComputeLoss (hyp.scratch-low gains, balance 4/1/0.4, gr=1, highest IoU wins a shared cell)."""
    matches = matches or yolov5_matches(maps, targets)
    lbox, lobj, lcls = torch.zeros(()), torch.zeros(()), torch.zeros(())
    tobjs = []
    for i, (p, mt) in enumerate(zip(maps, matches)):
        tobj = torch.zeros(p.shape[:4])
        if len(mt["b"]):
            ps = p[mt["b"], mt["a"], mt["gj"], mt["gi"]]
            pbox = torch.cat((ps[:, :2].sigmoid() * 2 - 0.5, (ps[:, 2:4].sigmoid() * 2) ** 2 * mt["anchor"]), 1)
            iou = ciou(pbox, mt["tbox"])
            lbox = lbox + (1 - iou).mean()
            for n, v in enumerate(iou.detach().clamp(0).tolist()):
                cell = (mt["b"][n], mt["a"][n], mt["gj"][n], mt["gi"][n])
                tobj[cell] = max(float(tobj[cell]), v)
            if nc > 1:
                lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], F.one_hot(mt["c"], nc).float())
        lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj) * BALANCE[i]
        tobjs.append(tobj)
    gains = torch.tensor([0.05, 1.0 * (imgsz / 640) ** 2, 0.5 * nc / 80])  # x 3/nl = 1 for three levels
    items = torch.stack((lbox, lobj, lcls)) * gains
    return items * maps[0].shape[0], items, tobjs


def decoded_xyxy(maps):
    """(B, A) cells' predicted boxes in pixels, xyxy, level by level, anchor-major."""
    out = []
    for i, p in enumerate(maps):
        bs, na, h, w, _ = p.shape
        gy, gx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        xy = (p[..., :2].detach().sigmoid() * 2 - 0.5 + torch.stack((gx, gy), -1)) * STRIDES[i]
        wh = (p[..., 2:4].detach().sigmoid() * 2) ** 2 * ANCHORS[i].view(1, 3, 1, 1, 2)
        out.append(box_convert(torch.cat((xy, wh), -1).reshape(bs, -1, 4), "cxcywh", "xyxy"))
    return torch.cat(out, 1)


def best_iou_and_matched(maps, targets, imgsz):
    """(B, A) best-GT IoU of each cell's predicted box, (B, A) matched cells, (n,) best IoU of each match."""
    boxes, bs = decoded_xyxy(maps), maps[0].shape[0]
    best = torch.zeros(boxes.shape[:2])
    for b in range(bs):
        gt = targets[targets[:, 0] == b, 2:6] * imgsz
        if len(gt):
            best[b] = box_iou(boxes[b], box_convert(gt, "cxcywh", "xyxy")).amax(1)
    matched, match_iou, start = torch.zeros_like(best, dtype=torch.bool), [], 0
    for p, mt in zip(maps, yolov5_matches(maps, targets)):
        _, na, h, w, _ = p.shape
        cell = start + (mt["a"] * h + mt["gj"]) * w + mt["gi"]
        matched[mt["b"], cell] = True
        match_iou.append(best[mt["b"], cell])
        start += na * h * w
    return best, matched, torch.cat(match_iou)


# one image at 64 px, one GT: centre (19.2, 28.8) px, size 16 x 19.2 px
HAND_TARGETS = torch.tensor([[0.0, 1, 0.3, 0.45, 0.25, 0.3]])
# Derived by hand. P3 (8x8 grid, GT at (2.4, 3.6), size (2, 2.4) cells): all three anchors within ratio 4; centre in
# the left half (x % 1 = 0.4) and lower half (y % 1 = 0.6) of cell (2, 3), so cells (2, 3), (1, 3) and (2, 4).
# P4 (4x4, GT at (1.2, 1.8), size (1, 1.2)): anchors 0 and 1 (ratios 3.2 and 3.9; anchor 2's 6.2 fails); cells (1, 1),
# (0, 1), (1, 2). P5 (2x2, size (0.5, 0.6)): every anchor ratio exceeds 4, no match.
HAND_MATCHES = {
    0: [(a, gi, gj) for a in range(3) for gi, gj in ((2, 3), (1, 3), (2, 4))],
    1: [(a, gi, gj) for a in range(2) for gi, gj in ((1, 1), (0, 1), (1, 2))],
    2: [],
}


def test_handmade_case_against_hand_computation():
    maps = random_maps(1, 64, nc=2)
    loss, items = ObjectnessDetectionLoss(fake_model(2, 64))({"maps": maps}, batch_of(HAND_TARGETS))

    gxy, gwh = torch.tensor([[2.4, 3.6], [1.2, 1.8]]), torch.tensor([[2.0, 2.4], [1.0, 1.2]])
    lbox = lobj = lcls = 0.0
    for level, p in enumerate(maps):
        tobj = torch.zeros(p.shape[:4])
        if HAND_MATCHES[level]:
            a, gi, gj = map(torch.tensor, zip(*HAND_MATCHES[level]))
            ps = p[0, a, gj, gi]
            anchor = ANCHORS[level][a] / STRIDES[level]
            pbox = torch.cat((ps[:, :2].sigmoid() * 2 - 0.5, (ps[:, 2:4].sigmoid() * 2) ** 2 * anchor), 1)
            tbox = torch.cat((gxy[level] - torch.stack((gi, gj), 1), gwh[level].expand(len(a), 2)), 1)
            iou = ciou(pbox, tbox)
            lbox += float((1 - iou).mean())
            tobj[0, a, gj, gi] = iou.detach().clamp(0)
            lcls += float(F.binary_cross_entropy_with_logits(ps[:, 5:], torch.tensor([[0.0, 1.0]]).expand(len(a), 2)))
        lobj += float(F.binary_cross_entropy_with_logits(p[..., 4], tobj)) * BALANCE[level]
    expected = torch.tensor([lbox * 0.05, lobj * (64 / 640) ** 2, lcls * 0.5 * 2 / 80])
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(torch.stack([items[k] for k in ("box_loss", "obj_loss", "cls_loss")]), expected)
    ref = yolov5_matches(maps, HAND_TARGETS)  # the YOLOv5 recipe finds the same 15 matches
    assert [sorted(zip(m["a"].tolist(), m["gi"].tolist(), m["gj"].tolist())) for m in ref] == [
        sorted(HAND_MATCHES[i]) for i in range(3)
    ]


def test_objectness_targets_equal_iou_on_matched_cells():
    """The target of every cell, recovered from the gradient of the loss w.r.t. its objectness logit."""
    imgsz, nc = 128, 3
    maps = random_maps(2, imgsz, nc, grad=True)
    targets = torch.tensor([[0, 0, 0.3, 0.3, 0.2, 0.2], [0, 2, 0.33, 0.31, 0.25, 0.3], [1, 1, 0.5, 0.5, 0.6, 0.5]])
    loss, _ = ObjectnessDetectionLoss(fake_model(nc, imgsz))({"maps": maps}, batch_of(targets))
    loss.sum().backward()
    _, _, tobjs = yolov5_loss(maps, targets, nc, imgsz)
    n_shared = 0
    for level, (p, tobj) in enumerate(zip(maps, tobjs)):
        # d loss / d logit = bs * gain_obj * balance * (sigmoid(logit) - target) / cells
        k = 2 * (imgsz / 640) ** 2 * BALANCE[level] / tobj.numel()
        recovered = p.detach()[..., 4].sigmoid() - p.grad[..., 4] / k
        torch.testing.assert_close(recovered, tobj, atol=2e-5, rtol=0)
        assert (tobj > 0).sum() > 0
    for mt in yolov5_matches(maps, targets):
        cells = torch.stack((mt["b"], mt["a"], mt["gj"], mt["gi"]), 1)
        n_shared += len(cells) - len(torch.unique(cells, dim=0))
    assert n_shared > 0  # the two overlapping GTs share cells: the highest IoU is the target


@pytest.mark.parametrize("nc", [1, 3])
def test_knobs_off_equals_yolov5_on_a_real_model(nc):
    """yolov5n-obj's training output; a batch with an image without GT and a GT in the corner cell: every term equals
    YOLOv5's."""
    imgsz = 128
    model = DetectionModel(resolve_model("yolov5n-obj.yaml"), nc=nc, verbose=False)
    model.args = train_args(imgsz=imgsz)
    crit = partial_criterion(model)
    assert isinstance(crit, ObjectnessDetectionLoss)
    targets = torch.tensor([[0, 0, 0.3, 0.3, 0.2, 0.2], [0, nc - 1, 0.7, 0.6, 0.5, 0.7], [2, 0, 0.1, 0.9, 0.1, 0.15],
                            [2, 0, 0.02, 0.97, 0.04, 0.05]])  # fmt: skip
    preds = model.train()(torch.rand(3, 3, imgsz, imgsz))
    loss, items = crit(preds, batch_of(targets))
    expected, expected_items, _ = yolov5_loss(preds["maps"], targets, nc, imgsz)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    assert list(items) == ["box_loss", "obj_loss", "cls_loss"]
    torch.testing.assert_close(torch.stack(list(items.values())), expected_items.detach(), rtol=1e-5, atol=1e-7)
    y, raw = model.eval()(torch.rand(1, 3, imgsz, imgsz))  # the validator's loss sees (inference, training dict)
    expected = yolov5_loss(raw["maps"], targets[:2], nc, imgsz)[0]
    torch.testing.assert_close(crit((y, raw), batch_of(targets[:2]))[0], expected, rtol=1e-5, atol=1e-7)


def test_bpr_drop_counts_are_exact():
    imgsz, nc = 128, 3
    maps = random_maps(2, imgsz, nc, scale=2.0)
    targets = torch.tensor([[0, 0, 0.3, 0.3, 0.2, 0.2], [0, 2, 0.7, 0.6, 0.5, 0.7], [1, 1, 0.5, 0.5, 0.6, 0.5]])
    best, matched, match_iou = best_iou_and_matched(maps, targets, imgsz)
    neg_cells = int((~matched & (best < 0.3)).sum())
    neg_matches = int((match_iou < 0.3).sum())
    assert neg_cells > 100 and neg_matches > 5
    crit = ObjectnessDetectionLoss(fake_model(nc, imgsz, drop_neg_obj=0.3, drop_neg_box=0.6))
    _, items = crit({"maps": maps}, batch_of(targets))
    assert int(items["obj_drop"]) == round(0.3 * neg_cells)
    assert int(items["box_drop"]) == round(0.6 * neg_matches)


def test_bpr_full_drop_keeps_exactly_the_other_cells_and_matches():
    """drop 1.0: objectness is the mean BCE over matched and non-negative cells; box over non-negative matches."""
    imgsz, nc = 128, 3
    maps = random_maps(2, imgsz, nc, scale=2.0)
    targets = torch.tensor([[0, 0, 0.3, 0.3, 0.2, 0.2], [1, 1, 0.5, 0.5, 0.6, 0.5]])
    crit = ObjectnessDetectionLoss(fake_model(nc, imgsz, drop_neg_obj=1.0, drop_neg_box=1.0))
    loss, _ = crit({"maps": maps}, batch_of(targets))
    best, matched, match_iou = best_iou_and_matched(maps, targets, imgsz)
    _, _, tobjs = yolov5_loss(maps, targets, nc, imgsz)
    keep_cell, keep_match = matched | (best >= 0.3), match_iou >= 0.3
    lobj, lbox, start, first = 0.0, 0.0, 0, 0
    for level, (p, tobj, mt) in enumerate(zip(maps, tobjs, yolov5_matches(maps, targets))):
        n = p.shape[1] * p.shape[2] * p.shape[3]
        bce = F.binary_cross_entropy_with_logits(p[..., 4].reshape(2, -1), tobj.reshape(2, -1), reduction="none")
        keep = keep_cell[:, start : start + n]
        lobj += float(bce[keep].mean()) * BALANCE[level]
        ps = p[mt["b"], mt["a"], mt["gj"], mt["gi"]]
        pbox = torch.cat((ps[:, :2].sigmoid() * 2 - 0.5, (ps[:, 2:4].sigmoid() * 2) ** 2 * mt["anchor"]), 1)
        kept = keep_match[first : first + len(ps)]
        lbox += float((1 - ciou(pbox, mt["tbox"]))[kept].mean()) if kept.any() else 0.0
        start, first = start + n, first + len(ps)
    torch.testing.assert_close(loss[:2].detach(), torch.tensor([lbox * 0.05, lobj * (imgsz / 640) ** 2]) * 2)


def test_scb_and_brl_terms():
    """SCB weights each match's class BCE by W_i of its GT; BRL (t=0) makes objectness focal, confusion cells scaled."""
    imgsz, nc = 128, 3
    maps = random_maps(2, imgsz, nc)
    targets = torch.tensor([[0, 0, 0.3, 0.3, 0.2, 0.2], [0, 2, 0.7, 0.6, 0.5, 0.7], [1, 1, 0.5, 0.5, 0.1, 0.1]])
    matches = yolov5_matches(maps, targets)
    counts = torch.bincount(torch.cat([m["gt"] for m in matches]), minlength=3).float()  # M_i
    assert counts.min() > 0
    w_gt = 3.0 * (counts.log() + 1.0) / counts
    lcls = 0.0
    for p, mt in zip(maps, matches):
        ps = p[mt["b"], mt["a"], mt["gj"], mt["gi"], 5:]
        bce = F.binary_cross_entropy_with_logits(ps, F.one_hot(mt["c"], nc).float(), reduction="none")
        lcls += float((bce * w_gt[mt["gt"]][:, None]).mean())
    loss, _ = ObjectnessDetectionLoss(fake_model(nc, imgsz, scb=True))({"maps": maps}, batch_of(targets))
    torch.testing.assert_close(float(loss[2]), lcls * 0.5 * nc / 80 * 2, rtol=1e-5, atol=0)

    loss, items = ObjectnessDetectionLoss(fake_model(nc, imgsz, brl=True, brl_t=0.0, brl_weight=0.5, brl_base="focal",
                                                     brl_gain=1.0))({"maps": maps}, batch_of(targets))
    best, matched, _ = best_iou_and_matched(maps, targets, imgsz)
    _, _, tobjs = yolov5_loss(maps, targets, nc, imgsz)
    confusion, lobj, start = ~matched & (best < 0.1), 0.0, 0
    for level, (p, tobj) in enumerate(zip(maps, tobjs)):
        x, t = p[..., 4].detach().reshape(2, -1).double(), tobj.reshape(2, -1).double()
        q = x.sigmoid()
        ce = -(t * q.log() + (1 - t) * (1 - q).log())
        focal = ce * (1 - (t * q + (1 - t) * (1 - q))) ** 2 * (t * 0.25 + (1 - t) * 0.75)  # soft-target focal
        focal = torch.where(confusion[:, start : start + x.shape[1]], focal * 0.5, focal)
        lobj += float(focal.mean()) * BALANCE[level]
        start += x.shape[1]
    torch.testing.assert_close(float(loss[1]), lobj * (imgsz / 640) ** 2 * 2, rtol=1e-4, atol=0)
    assert int(items["brl_conf"]) == int(confusion.sum())

    # brl_base=bce (the default): YOLOv5's objectness BCE everywhere, confusion cells scaled (t=0: nothing mirrored)
    loss, items = ObjectnessDetectionLoss(fake_model(nc, imgsz, brl=True, brl_t=0.0, brl_weight=0.5))(
        {"maps": maps}, batch_of(targets))
    lobj, start = 0.0, 0
    for level, (p, tobj) in enumerate(zip(maps, tobjs)):
        x, t = p[..., 4].detach().reshape(2, -1).double(), tobj.reshape(2, -1).double()
        q = x.sigmoid()
        ce = -(t * q.log() + (1 - t) * (1 - q).log())
        lobj += float(torch.where(confusion[:, start : start + x.shape[1]], ce * 0.5, ce).mean()) * BALANCE[level]
        start += x.shape[1]
    torch.testing.assert_close(float(loss[1]), lobj * (imgsz / 640) ** 2 * 2, rtol=1e-4, atol=0)


def test_comining_is_a_one_line_error():
    with pytest.raises(PartialConfigError, match="comining=True is not supported by the objectness head"):
        ObjectnessDetectionLoss(fake_model(3, 64, comining=True))


@pytest.mark.parametrize(("name", "params"), [("yolov5n-obj.yaml", 1872157), ("yolov5s-obj.yaml", 7235389)])
def test_model_yamls_build_yolov5(name, params):
    """Same parameter counts as YOLOv5 v6 n/s at 80 classes; YOLOv5's bias prior on the head."""
    model = DetectionModel(resolve_model(name), verbose=False)
    head = model.model[-1]
    assert isinstance(head, ObjectnessDetect) and head.na == 3 and model.stride.tolist() == list(STRIDES)
    assert sum(p.numel() for p in model.parameters()) == params
    torch.testing.assert_close(head.anchor_wh, ANCHORS)
    for conv, s in zip(head.m, STRIDES):
        b, bound = conv.bias.detach().view(3, -1), 1 / math.sqrt(conv.in_channels)  # prior + PyTorch's uniform init
        assert (b[:, 4] - math.log(8 / (640 / s) ** 2)).abs().max() <= bound
        assert (b[:, 5:] - math.log(0.6 / (80 - 0.99999))).abs().max() <= bound
    assert resolve_model("yolov8n.yaml") == "yolov8n.yaml"
    with pytest.raises(PartialConfigError, match="model=yolov5x-obj.yaml does not exist: expected a file or one of"):
        resolve_model("yolov5x-obj.yaml")


def test_inference_output_is_ultralytics_detect_format():
    head = ObjectnessDetect(nc=2, ch=(4, 4, 4)).eval()
    head.stride = torch.tensor(STRIDES)
    x = [torch.randn(1, 4, 64 // int(s), 64 // int(s)) for s in STRIDES]
    y, raw = head(x)
    assert y.shape == (1, 6, 3 * (64 + 16 + 4))
    p = raw["maps"][1][0, 2, 3, 1]  # level P4, anchor 2, row 3, column 1
    n = 3 * 64 + (2 * 16 + 3 * 4 + 1)
    xy = (p[:2].sigmoid() * 2 - 0.5 + torch.tensor([1.0, 3.0])) * 16
    wh = (p[2:4].sigmoid() * 2) ** 2 * ANCHORS[1, 2]
    torch.testing.assert_close(y[0, :, n], torch.cat((xy, wh, p[4].sigmoid() * p[5:].sigmoid())))


STOCK_LOAD = """
import sys
sys.modules["yolo_partial"] = None
from ultralytics import YOLO
try:
    YOLO(sys.argv[1])
except Exception as e:
    print("refused:", type(e).__name__)
"""


def test_train_val_predict_export_end_to_end(aquarium_small, tmp_path):
    """CLI train (BPR drops on) -> val, predict, ONNX export (parity), fine-tune; loads in a fresh process; stock
    Ultralytics refuses."""
    import onnxruntime as ort
    import pandas as pd
    from ultralytics import YOLO

    from yolo_partial.cli import main

    common = [f"project={tmp_path}", "exist_ok=True", "workers=0", "plots=False"]
    assert main(["train", "model=yolov5n-obj.yaml", f"data={aquarium_small}", "epochs=1", "imgsz=64", "batch=4",
                 "drop_neg_obj=0.75", "drop_neg_box=0.25", "name=train", *common]) == 0  # fmt: skip
    run = tmp_path / "train"
    df = pd.read_csv(run / "results.csv")
    assert {"train/box_loss", "train/obj_loss", "train/cls_loss", "train/obj_drop", "val/obj_loss"} <= set(df.columns)
    assert df["train/obj_drop"].iloc[0] > 0 and np.isfinite(df["metrics/mAP50(B)"].iloc[0])
    best = run / "weights" / "best.pt"
    assert main(["val", f"model={best}", f"data={aquarium_small}", "imgsz=64", "name=val", *common]) == 0
    src = aquarium_small.parent / "images" / "val"
    assert main(["predict", f"model={best}", f"source={src}", "imgsz=64", "name=pred", *common]) == 0
    assert len(list((tmp_path / "pred").glob("*.jpg"))) == 4
    assert main(["export", f"model={best}", "format=onnx", "imgsz=160", *common]) == 0
    assert main(["train", f"model={best}", f"data={aquarium_small}", "epochs=1", "imgsz=64", "batch=4", "name=tune",
                 *common]) == 0  # fine-tuning loads the weights into a rebuilt model  # fmt: skip

    model = YOLO(best).model.float().eval()
    assert isinstance(model.model[-1], ObjectnessDetect)
    im = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        ref = model(im)[0].numpy()
    sess = ort.InferenceSession(str(best.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: im.numpy()})[0]
    assert out.shape == ref.shape == (1, 4 + 7, 3 * (20 * 20 + 10 * 10 + 5 * 5))
    assert np.abs(out[:, :4] - ref[:, :4]).max() <= 1e-3 and np.abs(out[:, 4:] - ref[:, 4:]).max() <= 1e-3

    env = {**os.environ, "PYTHONPATH": ""}
    code = "import sys; from ultralytics import YOLO; m = YOLO(sys.argv[1]); print(type(m.model.model[-1]).__name__)"
    out = subprocess.run([sys.executable, "-c", code, str(best)], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().endswith("ObjectnessDetect"), out.stderr[-2000:]  # unpickling imports yolo_partial
    out = subprocess.run([sys.executable, "-c", STOCK_LOAD, str(best)], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert "refused:" in out.stdout, out.stderr[-2000:]


def test_reproduce_dusia_obj_on_the_objectness_model(aquarium_small, tmp_path):
    """`yolo-partial reproduce table=dusia-obj model=yolov5n-obj.yaml` trains its rows on this head (one row here)."""
    import pandas as pd

    from yolo_partial.cli import main

    keys = ["epochs=1", "imgsz=64", "batch=4", "workers=0", "plots=False", "values=0.75", f"project={tmp_path}"]
    assert main(["reproduce", "table=dusia-obj", "model=yolov5n-obj.yaml", f"data={aquarium_small}", *keys]) == 0
    sweep = tmp_path / "dusia-obj"
    assert list(pd.read_csv(sweep / "table.csv")["drop_neg_obj"]) == [0.75]
    row = json.loads((sweep / "rows" / "drop_neg_obj=0.75.json").read_text())
    assert row["settings"]["model"] == "yolov5n-obj.yaml" and np.isfinite(row["val mAP50"])
    assert isinstance(torch.load(row["weights"], weights_only=False)["model"].model[-1], ObjectnessDetect)
    assert pd.read_csv(sweep / "drop_neg_obj=0.75" / "results.csv")["train/obj_drop"].iloc[0] > 0


def test_box_and_cls_keys_scale_yolov5_gains_in_proportion():
    """Ultralytics' box=/cls= act on this head: the defaults give YOLOv5's gains, doubling one doubles its terms."""
    from yolo_partial.losses.objectness import GAINS

    model = DetectionModel(resolve_model("yolov5n-obj.yaml"), nc=3, verbose=False)
    model.args = train_args(imgsz=640)
    stock = ObjectnessDetectionLoss(model).gain
    assert stock == pytest.approx({"box": GAINS["box"], "obj": GAINS["obj"], "cls": GAINS["cls"] * 3 / 80})
    model.args = SimpleNamespace(**{**vars(model.args), "box": 15.0, "cls": 1.0})
    scaled = ObjectnessDetectionLoss(model).gain
    assert scaled == pytest.approx({"box": 2 * stock["box"], "obj": 2 * stock["obj"], "cls": 2 * stock["cls"]})
