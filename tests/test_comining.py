"""Tests of Co-mining (yolo_partial.losses.comining), hidden boxes through augmentation and the non-finite guard.

Pseudo labels are checked on handmade predictions whose decoded boxes and scores are known exactly; losses are
compared with the base criterion called on hand-written targets; hidden boxes are compared with the same augmentation
run on a copy of the dataset where they are ordinary labels.
"""

import shutil

import numpy as np
import pytest
import torch
from conftest import REPO, criterion, train_args, train_models
from ultralytics.data.dataset import YOLODataset
from ultralytics.nn.tasks import DetectionModel

from yolo_partial import PartialDetectionTrainer, shapes
from yolo_partial.hidden_labels import HIDDEN_CLS, HiddenBoxesDataset
from yolo_partial.errors import PartialConfigError
from yolo_partial.keys import METHOD_DEFAULTS
from yolo_partial.losses import CoMiningLoss, add_jittered_view, color_jitter, partial_criterion
from yolo_partial.losses.comining import JITTER, VIEWS, CoMining, hsv_factors, pseudo_labels

IMGSZ, NC = 64, 3
HEADS = ("yolov8n.yaml", "yolo26n.yaml")
STOCK_KEYS = {"yolov8n.yaml": ["box_loss", "cls_loss", "dfl_loss"], "yolo26n.yaml": ["box_loss", "cls_loss", "l1_loss"]}
LOW = -20.0  # logit of "no object"
GT = {"batch_idx": torch.tensor([0.0]), "cls": torch.tensor([[0.0]]),
      "bboxes": torch.tensor([[0.75, 0.75, 0.375, 0.375]])}  # fmt: skip
# GT of the image: class 0 at (36, 36)-(60, 60) px. Handmade predictions on stride-8 cells (x, y), anchor at
# ((x + 0.5) * 8, (y + 0.5) * 8), distances (l, t, r, b) in cells:   -> pixel box            fate
VIEW0 = [
    dict(cell=(1, 1), d=(1, 1, 1, 1), cls=1, logit=5.0),  # (4, 4)-(20, 20)       kept
    dict(cell=(6, 6), d=(2, 2, 1, 0), cls=0, logit=4.0),  # (36, 36)-(60, 52)     dropped: IoU 0.67 with same-class GT
    dict(cell=(5, 5), d=(1, 1, 2, 2), cls=2, logit=4.5),  # (36, 36)-(60, 60)     kept: the GT there is another class
    dict(cell=(2, 1), d=(2, 1, 1, 1), cls=1, logit=3.0),  # (4, 4)-(28, 20)       suppressed by NMS (IoU 0.67 with 1st)
    dict(cell=(1, 6), d=(1, 1, 1, 1), cls=1, logit=0.2),  # (4, 44)-(20, 60)      below the 0.6 score threshold
    dict(cell=(5, 6), d=(1, 0, 2, 1), cls=0, logit=3.5),  # (36, 52)-(60, 60)     kept: IoU 0.33 with same-class GT
]
VIEW1 = [dict(cell=(1, 6), d=(1, 1, 1, 1), cls=1, logit=2.0)]  # (4, 44)-(20, 60) kept, for view 0
EXPECT_FOR_VIEW1 = [[1, 12, 12, 16, 16], [2, 48, 48, 24, 24], [0, 48, 56, 24, 8]]  # cls, xywh px
EXPECT_FOR_VIEW0 = [[1, 12, 52, 16, 16]]



@pytest.fixture(scope="module")
def models():
    return train_models(HEADS, NC)



def _branch_preds(model, spec, n_img=1):
    """Training outputs of one head branch for n_img images with the handmade boxes/scores of `spec` (image 0)."""
    head = model.model[-1]
    reg_max, n_anchors = head.reg_max, sum((IMGSZ // int(s)) ** 2 for s in head.stride)
    boxes = torch.zeros(n_img, 4 * reg_max, n_anchors)
    if reg_max > 1:
        boxes.view(n_img, 4, reg_max, n_anchors)[:, :, 1] = 30.0  # DFL peaked at distance 1 cell
    else:
        boxes += 1.0
    scores = torch.full((n_img, NC, n_anchors), LOW)
    for p in spec:
        a = p["cell"][1] * (IMGSZ // 8) + p["cell"][0]  # stride-8 anchors come first, row by row
        if reg_max > 1:
            boxes.view(n_img, 4, reg_max, n_anchors)[0, :, :, a] = 0.0
            boxes.view(n_img, 4, reg_max, n_anchors)[0, range(4), list(p["d"]), a] = 30.0
        else:
            boxes[0, :, a] = torch.tensor(p["d"], dtype=torch.float)
        scores[0, p["cls"], a] = p["logit"]
    feats = [torch.zeros(n_img, 1, IMGSZ // int(s), IMGSZ // int(s)) for s in head.stride]
    return {"boxes": boxes, "scores": scores, "feats": feats}


def _two_view_preds(model, spec0, spec1):
    """Training outputs of a two-view batch (one image per view); YOLO26's one-to-many branch gets a decoy box."""
    views = [_branch_preds(model, s) for s in (spec0, spec1)]
    preds = {k: torch.cat([v[k] for v in views]) for k in ("boxes", "scores")}
    preds["feats"] = [torch.cat(f) for f in zip(*(v["feats"] for v in views))]
    if getattr(model.model[-1], "one2one_cv2", None) is None:
        return preds
    decoy = [dict(cell=(3, 3), d=(1, 1, 1, 1), cls=1, logit=6.0)]  # confident, but not in the inference branch
    d = [_branch_preds(model, decoy) for _ in range(2)]
    one2many = {"boxes": torch.cat([v["boxes"] for v in d]), "scores": torch.cat([v["scores"] for v in d]),
                "feats": preds["feats"]}  # fmt: skip
    return {"one2many": one2many, "one2one": preds}


def _half(preds, v):
    """View v (one image) of two-view training outputs (nested dicts and lists of tensors), keeping their graph."""
    if torch.is_tensor(preds):
        return preds[v : v + 1]
    if isinstance(preds, dict):
        return {k: _half(x, v) for k, x in preds.items()}
    return [_half(x, v) for x in preds]


def _two_view_batch(gt=GT, hidden=None):
    batch = {"img": torch.zeros(1, 3, IMGSZ, IMGSZ), **{k: v.clone() for k, v in gt.items()}, "im_file": ("a.jpg",)}
    if hidden is not None:
        batch.update(hidden_batch_idx=torch.zeros(len(hidden)), hidden_cls=torch.tensor(hidden)[:, :1].float(),
                     hidden_bboxes=torch.tensor(hidden)[:, 1:].float() / IMGSZ)  # fmt: skip
    return add_jittered_view(batch, p=0.0)


def _rows(expect, idx=0.0):
    """Hand-written label rows (batch_idx, cls (n, 1), normalised bboxes) from [cls, x, y, w, h] pixel lists."""
    t = torch.tensor(expect, dtype=torch.float)
    return {"batch_idx": torch.full((len(t),), idx), "cls": t[:, :1], "bboxes": t[:, 1:] / IMGSZ}


def _cat(*parts):
    return {k: torch.cat([p[k] for p in parts]) for k in ("batch_idx", "cls", "bboxes")}


def _assert_rows(got, expect):
    """Label rows equal as sets: (batch_idx, cls, pixel xywh) within 1e-3 px."""
    rows = [torch.tensor(sorted(torch.cat((x["batch_idx"][:, None], x["cls"], x["bboxes"] * IMGSZ), 1).tolist()))
            for x in (got, expect)]  # fmt: skip
    torch.testing.assert_close(rows[0].reshape(-1, 6), rows[1].reshape(-1, 6), rtol=0, atol=1e-3)


# ----------------------------------------------------------------------------------------------- co-generation
@pytest.mark.parametrize("head", HEADS)
def test_handmade_pseudo_labels(models, head):
    """Score threshold, class-wise NMS and same-class GT overlap decide which predictions become pseudo boxes."""
    crit = criterion(models[head], comining=True)
    preds = _two_view_preds(models[head], VIEW0, VIEW1)
    half = _half(preds["one2one"] if "one2one" in preds else preds, 0)
    got = pseudo_labels(half, crit.decoder, GT, 0.6, 0.5, 0.4)
    _assert_rows(got, _rows(EXPECT_FOR_VIEW1))
    # a looser GT rule keeps the box overlapping the same-class GT; a stricter one also drops the 0.33 overlap
    assert len(pseudo_labels(half, crit.decoder, GT, 0.6, 0.5, 0.7)["cls"]) == 4
    assert len(pseudo_labels(half, crit.decoder, GT, 0.6, 0.5, 0.3)["cls"]) == 2
    assert len(pseudo_labels(half, crit.decoder, GT, 0.5, 0.5, 0.4)["cls"]) == 4  # 0.55 passes a 0.5 threshold
    assert len(pseudo_labels(half, crit.decoder, GT, 0.6, 0.7, 0.4)["cls"]) == 4  # NMS at 0.7 keeps the 0.67 overlap


@pytest.mark.parametrize("head", HEADS)
def test_one_class_per_object_rule(models, head):
    """cm_classes=one: a label of any class vetoes a pseudo box on it, and of boxes of different classes on one object
    only the best-scored stands; the reference rule (any) keeps both and mines class 2 on the class-0 label."""
    crit = criterion(models[head], comining=True)
    rival = dict(cell=(1, 2), d=(1, 2, 1, 0), cls=2, logit=4.0)  # (4, 4)-(20, 20) as VIEW0's first box, class 2
    preds = _two_view_preds(models[head], [*VIEW0, rival], VIEW1)
    half = _half(preds["one2one"] if "one2one" in preds else preds, 0)
    _assert_rows(pseudo_labels(half, crit.decoder, GT, 0.6, 0.5, 0.4), _rows([*EXPECT_FOR_VIEW1, [2, 12, 12, 16, 16]]))
    one = pseudo_labels(half, crit.decoder, GT, 0.6, 0.5, 0.4, classes="one")
    _assert_rows(one, _rows([[1, 12, 12, 16, 16], [0, 48, 56, 24, 8]]))  # 0.33 with its own class's label: kept


@pytest.mark.parametrize("head", HEADS)
def test_pseudo_boxes_become_the_other_views_positives(models, head):
    model = models[head]
    crit = criterion(model, comining=True, cm_score=0.6)  # the handmade scores are laid out around 0.6
    assert isinstance(crit, CoMiningLoss)
    base = criterion(model)  # the same criterion without Co-mining
    preds, batch = _two_view_preds(model, VIEW0, VIEW1), _two_view_batch()
    loss, items = crit(preds, batch)
    target0 = _cat(GT, _rows(EXPECT_FOR_VIEW0))  # original view: GT + what the copy found
    target1 = _cat(GT, _rows(EXPECT_FOR_VIEW1))  # copy: GT + what the original found
    l0, i0 = base(_half(preds, 0), target0)
    l1, i1 = base(_half(preds, 1), target1)
    torch.testing.assert_close(loss, l0 + l1, rtol=1e-6, atol=1e-6)
    for k in i0:
        torch.testing.assert_close(items[k], (i0[k] + i1[k]) / 2, rtol=1e-6, atol=1e-6)
    assert items["pseudo_n"] == pytest.approx(4 / 2)
    # without the pseudo boxes the copy's loss differs: they are positives there
    assert not torch.allclose(base(_half(preds, 1), GT)[0], l1)
    # the assigner makes anchors of the copy foreground for the mined (4, 4)-(20, 20) box
    e2e = head == "yolo26n.yaml"
    a = (base.one2many if e2e else base).assign(_half(preds["one2many"] if e2e else preds, 1), target1)
    fg_targets = a.target_bboxes[a.fg_mask]
    assert (fg_targets - torch.tensor([4.0, 4, 20, 20])).abs().amax(1).min() < 1e-3


def test_yolo26_uses_the_inference_branch(models):
    """The one-to-many branch's confident decoy box never becomes a pseudo box: YOLO26 infers with one-to-one."""
    crit = criterion(models["yolo26n.yaml"], comining=True)
    preds = _half(_two_view_preds(models["yolo26n.yaml"], [], []), 0)  # only the one-to-many decoy is confident
    assert crit.mine(preds, GT)["cls"].numel() == 0
    swapped = {"one2many": preds["one2one"], "one2one": preds["one2many"]}
    _assert_rows(crit.mine(swapped, GT), _rows([[1, 28, 28, 16, 16]]))


def test_pseudo_hit_counts_hidden_matches(models):
    """pseudo_hit: pseudo boxes overlapping a hidden box of their image and class at IoU >= 0.5, per image and view."""
    model = models["yolov8n.yaml"]
    crit = CoMiningLoss(criterion(model), 0.6, 0.5, 0.4, hidden=True)
    hidden = [[1, 4, 4, 20, 20],  # = the class-1 pseudo box for the copy: a hit
              [1, 4, 4, 20, 14],  # IoU 0.62 with that same pseudo box, which still counts once
              [0, 36, 36, 60, 60],  # where the class-2 pseudo box is, other class; IoU 0.33 with the class-0 one
              [1, 4, 46, 20, 60]]  # IoU 0.88 with the class-1 pseudo box for the original: a hit
    hidden_xywh = [[c, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1] for c, x1, y1, x2, y2 in hidden]
    _, items = crit(_two_view_preds(model, VIEW0, VIEW1), _two_view_batch(hidden=hidden_xywh))
    assert list(items)[-2:] == ["pseudo_n", "pseudo_hit"]
    assert items["pseudo_n"] == pytest.approx(2.0) and items["pseudo_hit"] == pytest.approx(2 / 2)


# ----------------------------------------------------------------------------------------------- gradients and keys
@pytest.mark.parametrize("head", HEADS)
def test_no_gradient_through_pseudo_labels(models, head):
    """The loss's gradient equals that of the two branches computed with the mined pseudo boxes given as constants."""
    model = models[head]
    crit = criterion(model, comining=True, cm_score=0.3)
    with torch.no_grad():
        raw = model(torch.rand(2, 3, IMGSZ, IMGSZ))
        for branch in raw.values() if "one2one" in raw else [raw]:
            branch["scores"] = torch.randn_like(branch["scores"]) * 3  # many scores above 0.3
    batch = add_jittered_view({"img": torch.zeros(1, 3, IMGSZ, IMGSZ), **GT}, p=0.0)

    def leaves(x):
        if torch.is_tensor(x):
            return x.detach().clone().requires_grad_()
        return {k: leaves(v) for k, v in x.items()} if isinstance(x, dict) else [leaves(v) for v in x]

    def grads(x):
        if torch.is_tensor(x):
            return [x.grad]
        return [g for v in (x.values() if isinstance(x, dict) else x) for g in grads(v)]

    p1 = leaves(raw)
    p2 = leaves(p1)
    loss, items = crit(p1, batch)
    loss.sum().backward()
    assert items["pseudo_n"] > 0
    halves = [_half(p2, v) for v in (0, 1)]
    views = [{k: v.clone() for k, v in GT.items()} for _ in range(2)]
    mined = [crit.mine(halves[v], views[v]) for v in (0, 1)]
    assert all(not t.requires_grad for m in mined for t in m.values())
    ref = sum(crit.base(halves[v], _cat(views[v], mined[1 - v]))[0] for v in (0, 1))
    ref.sum().backward()
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    for g1, g2 in zip(grads(p1), grads(p2)):
        if g1 is None:
            assert g2 is None
        else:
            torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-9)
    assert any(g is not None and g.abs().sum() > 0 for g in grads(p1))


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("head", HEADS)
def test_same_keys_on_every_batch(models, head, hidden):
    """Pseudo boxes, none surviving, no GT at all, the validator's single-view batch: one key list (DDP needs it)."""
    model = models[head]
    model.args = train_args(comining=True, brl=True, drop_neg_obj=0.5)
    crit = CoMiningLoss(partial_criterion(model).base, 0.6, 0.5, 0.4, hidden=hidden)
    keys = STOCK_KEYS[head] + ["brl_conf", "brl_recal", "box_drop", "obj_drop", "pseudo_n"] + (["pseudo_hit"] * hidden)
    empty = {"batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    some = _two_view_preds(model, VIEW0, VIEW1)
    none = _two_view_preds(model, [], [])
    cases = {
        "pseudo": (some, _two_view_batch()),
        "none survive": (none, _two_view_batch()),
        "no GT": (some, _two_view_batch(empty)),
        "no GT, none survive": (none, _two_view_batch(empty)),
    }
    for name, (preds, batch) in cases.items():
        loss, items = crit(preds, batch)
        assert list(items) == keys, name
        assert torch.isfinite(loss).all() and all(torch.isfinite(v) for v in items.values()), name
        assert (items["pseudo_n"] > 0) == (preds is some), name
    single = {"img": torch.zeros(2, 3, IMGSZ, IMGSZ), "batch_idx": torch.tensor([0.0, 1]),
              "cls": torch.tensor([[0.0], [1]]), "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 2)}  # fmt: skip
    model.eval()
    try:
        with torch.no_grad():
            preds = model(single["img"])  # the validator's (inference, training outputs) tuple
    finally:
        model.train()
    torch.manual_seed(1)  # the same random BPR draw for both
    loss, items = crit(preds, single)
    assert list(items) == keys and items["pseudo_n"] == 0
    torch.manual_seed(1)
    torch.testing.assert_close(loss, crit.base(preds, single)[0], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- keys
@pytest.mark.parametrize("key", ["cm_score", "cm_nms", "cm_gt_iou"])
@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, "high"])
def test_cm_range_errors_python(key, value, tmp_path):
    with pytest.raises(PartialConfigError, match=rf"^{key}=.* is invalid: expected a number in \(0, 1\)$"):
        PartialDetectionTrainer(overrides={"data": "shapes", key: value, "project": str(tmp_path)})


@pytest.mark.parametrize("arg", ["cm_score=1.0", "cm_nms=0", "cm_gt_iou=2", "nan_patience=0", "nan_patience=2.5",
                                 "comining=maybe", "cm_jitter=strong", "cm_classes=all"])  # fmt: skip
def test_cm_range_errors_cli(arg, capsys):
    from yolo_partial.cli import main

    assert main(["train", "cfg=cfg/comining.yaml", arg]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"yolo-partial train: error: {arg.split('=')[0]}=")


def test_comining_cfg_holds_spec_defaults():
    import yaml

    cfg = yaml.safe_load((REPO / "cfg" / "comining.yaml").read_text())
    assert cfg == {"comining": True, "cm_score": METHOD_DEFAULTS["cm_score"], "cm_nms": 0.5, "cm_gt_iou": 0.4}
    assert METHOD_DEFAULTS["cm_jitter"] == "reference" and METHOD_DEFAULTS["cm_classes"] == "any"
    assert METHOD_DEFAULTS["cm_score"] == 0.35 and METHOD_DEFAULTS["comining"] is False  # measured for TAL scores
    assert METHOD_DEFAULTS["nan_patience"] == 10


@pytest.mark.parametrize("head", HEADS)
def test_comining_off_is_stock(models, head):
    """comining=False with other cm_* values: the plain criterion, equal to Ultralytics' own loss."""
    model = models[head]
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        preds = model(x)
    batch = {"img": x, "batch_idx": torch.tensor([0.0, 1]), "cls": torch.tensor([[0.0], [2]]),
             "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.4]])}  # fmt: skip
    crit = criterion(model, comining=False, cm_score=0.2, cm_nms=0.9, cm_gt_iou=0.1, nan_patience=3)
    assert not isinstance(crit, CoMiningLoss)
    model.args = train_args()
    loss, items = crit(preds, batch)
    s_loss, s_items = model.init_criterion()(preds, batch)
    assert torch.equal(loss, s_loss) and list(items) == list(s_items) == STOCK_KEYS[head]
    assert all(torch.equal(items[k], s_items[k]) for k in items)


# ----------------------------------------------------------------------------------------------- the jittered view
def test_color_jitter():
    img = torch.full((12, 3, 16, 16), 0.2)
    img[:, :, 4:9, 3:12] = torch.tensor([0.9, 0.4, 0.1])[:, None, None]  # a coloured rectangle
    assert torch.equal(color_jitter(img, p=0.0), img)
    torch.manual_seed(3)
    expect = torch.rand(12) < 0.8  # color_jitter's first draw picks the images
    torch.manual_seed(3)
    out = color_jitter(img)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    changed = (out != img).flatten(1).any(1)
    assert torch.equal(changed, expect) and 0 < int(expect.sum()) < 12
    # colour only: each output pixel is a function of its input colour, so the rectangle stays where it was
    inside = torch.zeros(16 * 16, dtype=torch.bool)
    inside.view(16, 16)[4:9, 3:12] = True
    for o in out:
        pix = o.flatten(1).T  # (256, 3)
        assert len(pix[inside].unique(dim=0)) == 1 and len(pix[~inside].unique(dim=0)) == 1


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue in [0, 1) of (N, 3) RGB colours, computed directly from the hexcone definition."""
    mx, mn = rgb.max(1).values, rgb.min(1).values
    r, g, b = rgb.unbind(1)
    d = (mx - mn).clamp(min=1e-12)
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h / 6


def test_hsv_jitter_stays_inside_the_trainers_ranges():
    """cm_jitter=hsv: the copy's colours move by at most the trainer's hsv_h of the hue circle and hsv_v in value,
    where the reference's jitter moves a red object's hue by up to 0.2 (to orange-yellow or magenta)."""
    args = type("Args", (), {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4})()
    assert hsv_factors(args) == (0.4, 0.0, 0.7, 0.015)
    assert hsv_factors(type("Args", (), {"hsv_h": 0.9, "hsv_s": 0, "hsv_v": 0})())[3] == 0.5  # ColorJitter's cap
    red = torch.tensor([0.85, 0.15, 0.15])
    img = red.view(1, 3, 1, 1).expand(200, 3, 4, 4).clone()
    torch.manual_seed(0)
    ours = color_jitter(img, p=1.0, factors=hsv_factors(args))[:, :, 0, 0]
    torch.manual_seed(0)
    ref = color_jitter(img, p=1.0, factors=JITTER)[:, :, 0, 0]

    def hue_shift(x):  # circular distance from red's hue (0)
        h = _hue(x)
        return torch.minimum(h, 1 - h)

    assert hue_shift(ours).max() <= 0.03  # hsv_h 0.015, plus what clipping a brightened channel at 1 moves
    assert hue_shift(ref).max() > 0.1  # the reference's jitter leaves the class's colour


def test_cm_jitter_picks_the_copys_factors():
    """The trainer hook draws the copy with the reference's factors or the trainer's hsv ranges, by cm_jitter."""
    trainer = type("T", (), {"args": type("Args", (), {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0})()})()
    batch = {"img": torch.rand(4, 3, 8, 8), "batch_idx": torch.tensor([0.0]), "cls": torch.tensor([[1.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    keys = {**{k: METHOD_DEFAULTS[k] for k in CoMining.KEYS}, "comining": True}
    out = CoMining.from_args({**keys, "cm_jitter": "hsv"}).preprocess_batch(dict(batch), trainer)
    assert torch.equal(out["img"][4:], batch["img"])  # zero ranges: the copy is the image itself
    torch.manual_seed(1)
    out = CoMining.from_args({**keys, "cm_jitter": "reference"}).preprocess_batch(dict(batch), trainer)
    torch.manual_seed(1)
    assert torch.equal(out["img"][4:], color_jitter(batch["img"]))


def test_add_jittered_view():
    img = torch.rand(2, 3, 8, 8)
    batch = {"img": img, "batch_idx": torch.tensor([0.0, 1, 1]), "cls": torch.tensor([[0.0], [1], [2]]),
             "bboxes": torch.rand(3, 4), "im_file": ("a.jpg", "b.jpg"), "hidden_batch_idx": torch.tensor([1.0]),
             "hidden_cls": torch.tensor([[2.0]]), "hidden_bboxes": torch.rand(1, 4)}  # fmt: skip
    out = add_jittered_view(batch, p=1.0)
    assert out[VIEWS] == 2 and out["im_file"] == ("a.jpg", "b.jpg", "a.jpg", "b.jpg")
    assert out["img"].shape == (4, 3, 8, 8) and torch.equal(out["img"][:2], img)
    assert not torch.equal(out["img"][2:], img)
    assert out["batch_idx"].tolist() == [0, 1, 1, 2, 3, 3]
    assert torch.equal(out["cls"], torch.cat((batch["cls"], batch["cls"])))
    assert torch.equal(out["bboxes"], torch.cat((batch["bboxes"], batch["bboxes"])))
    assert out["hidden_batch_idx"].tolist() == [1, 3]
    assert torch.equal(out["hidden_bboxes"][1], batch["hidden_bboxes"][0])


# ----------------------------------------------------------------------------------------------- hidden boxes
@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    return shapes.generate(tmp_path_factory.mktemp("shapes") / "s", n_train=12, n_val=4)


AUG = dict(model="yolov8n.yaml", imgsz=64, mosaic=1.0, degrees=10.0, translate=0.2, scale=0.5, shear=2.0, fliplr=0.5,
           workers=0, plots=False)  # fmt: skip


def _trainer(data, tmp_path, name, **kw):
    t = PartialDetectionTrainer(overrides={"data": str(data), "project": str(tmp_path), "name": name, **AUG, **kw})
    t.model = DetectionModel("yolov8n.yaml", nc=len(t.data["names"]), verbose=False)  # build_dataset reads its stride
    return t


def _with_hidden_as_labels(data, dst):
    """A copy of the partial dataset whose train label files also list the hidden boxes, appended as ordinary labels."""
    from yolo_partial.hidden import find_manifest, load_manifest

    src = data.parent / "partial"
    shutil.copytree(src, dst)
    manifest = load_manifest(find_manifest(data))
    for im in sorted((src / "images" / "train").iterdir()):
        extra = "".join(f"{int(c)} {x} {y} {w} {h}\n" for c, x, y, w, h in manifest.for_image(im).tolist())
        lb = dst / "labels" / "train" / f"{im.stem}.txt"
        lb.write_text(lb.read_text() + extra)
    yaml = dst / "data.yaml"
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(shapes.CLASS_NAMES))
    yaml.write_text(f"path: {dst}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return yaml, manifest


def _seeded(dataset, i, seed):
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return dataset[i]


def test_hidden_boxes_follow_mosaic_and_affine(shapes_data, tmp_path):
    """The hidden boxes split out in preprocess_batch equal the same augmentation run with them as ordinary labels."""
    ref_yaml, manifest = _with_hidden_as_labels(shapes_data, tmp_path / "ref")
    ta, tb = _trainer(shapes_data, tmp_path, "a", comining=True), _trainer(ref_yaml, tmp_path, "b")
    a = ta.build_dataset(ta.data["train"], "train", 4)
    b = tb.build_dataset(tb.data["train"], "train", 4)
    assert type(a) is HiddenBoxesDataset and type(b) is YOLODataset
    nc = len(ta.data["names"])
    labels = (shapes_data.parent / "partial/labels/train").glob("*.txt")
    n_partial = sum(len(p.read_text().splitlines()) for p in labels)
    assert sum(len(lb["cls"]) for lb in a.labels) == n_partial and max(lb["cls"].max() for lb in a.labels) < nc
    n_hidden = n_from_partners = 0
    for step in range(3):
        idx = [4 * step + j for j in range(4)]
        sa = [_seeded(a, i, 100 * step + i) for i in idx]
        sb = [_seeded(b, i, 100 * step + i) for i in idx]
        batch_a, batch_b = YOLODataset.collate_fn(sa), YOLODataset.collate_fn(sb)
        assert torch.equal(batch_a["img"], batch_b["img"])  # the very same augmentation ran on both
        marked = batch_a["cls"].view(-1) >= HIDDEN_CLS
        # Mosaic's three partner images bring their hidden boxes along as well
        own = [len(manifest.for_image(a.im_files[i])) for i in idx]
        n_from_partners += sum(max(0, int((batch_a["batch_idx"][marked] == j).sum()) - own[j]) for j in range(4))
        out = ta.preprocess_batch(batch_a)
        assert out["img"].shape[0] == 8 and out["cls"].max() < nc  # the marker never reaches the loss
        view0 = out["batch_idx"] < 4
        torch.testing.assert_close(out["cls"][view0], batch_b["cls"][~marked], rtol=0, atol=0)
        torch.testing.assert_close(out["bboxes"][view0], batch_b["bboxes"][~marked], rtol=0, atol=1e-6)
        torch.testing.assert_close(out["batch_idx"][view0], batch_b["batch_idx"][~marked], rtol=0, atol=0)
        hid0 = out["hidden_batch_idx"] < 4
        torch.testing.assert_close(out["hidden_cls"][hid0], batch_b["cls"][marked], rtol=0, atol=0)
        torch.testing.assert_close(out["hidden_bboxes"][hid0], batch_b["bboxes"][marked], rtol=0, atol=1e-6)
        torch.testing.assert_close(out["hidden_batch_idx"][hid0], batch_b["batch_idx"][marked], rtol=0, atol=0)
        n_hidden += int(marked.sum())
    assert n_hidden > 0 and n_from_partners > 0


def test_preprocess_without_comining_is_unchanged(shapes_data, tmp_path):
    t = _trainer(shapes_data, tmp_path, "off")
    batch = {"img": torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8), "batch_idx": torch.tensor([0.0, 1]),
             "cls": torch.tensor([[0.0], [1]]), "bboxes": torch.rand(2, 4), "im_file": ("a", "b")}  # fmt: skip
    ref = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    out = t.preprocess_batch(batch)
    assert set(out) == set(ref) and torch.equal(out["img"], ref["img"].float() / 255)
    assert all(torch.equal(out[k], ref[k]) for k in ("batch_idx", "cls", "bboxes"))
    assert type(t.build_dataset(t.data["train"], "train", 4)) is YOLODataset  # no hidden boxes without Co-mining


@pytest.mark.parametrize("yaml", ["yolo11n.yaml", "yolov5nu.yaml"])
def test_other_anchor_free_heads_train_with_comining(yaml):
    """YOLO11 and YOLOv5u: a real two-view forward pass gives a finite loss, gradients and the fixed key set."""
    torch.manual_seed(0)
    model = DetectionModel(yaml.replace("yolov5nu", "yolov5n"), nc=NC, verbose=False).train()
    crit = criterion(model, comining=True, cm_score=1e-4)  # the untrained model scores ~1e-3: its boxes become pseudo labels
    batch = add_jittered_view({"img": torch.rand(1, 3, IMGSZ, IMGSZ), **{k: v.clone() for k, v in GT.items()},
                               "im_file": ("a.jpg",)})  # fmt: skip
    loss, items = crit(model(batch["img"]), batch)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and list(items) == ["box_loss", "cls_loss", "dfl_loss", "pseudo_n"]
    assert items["pseudo_n"] > 0 and all(p.grad is not None for p in model.model[-1].parameters() if p.requires_grad)
