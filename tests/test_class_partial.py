"""Tests of class-partial labels and ignore regions in training (yolo_partial.losses.class_partial), their transport
through augmentation, their composition with BRL / BPR / Co-mining, and `split` carrying a partial: file.

Masks are checked against a hand-built batch whose anchors' centres are listed independently; transport against the
same augmentation run on a copy of the dataset where the ignore boxes and tiles are ordinary labels.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from ultralytics.data.dataset import YOLODataset
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG_DICT
from ultralytics.utils.loss import v8DetectionLoss

from conftest import train_args
from yolo_partial import PartialDetectionTrainer, shapes
from yolo_partial.errors import PartialConfigError
from yolo_partial.hidden_labels import MarkedDataset
from yolo_partial.losses import CoMiningLoss, PartialDetectionLoss, Terms, add_jittered_view, pseudo_labels
from yolo_partial.losses.class_partial import ClassPartial, drop_asserted, image_lists
from yolo_partial.losses.comining import _view
from yolo_partial.partial_labels import load_for_data, write_partial

IMGSZ, NC = 64, 3
T, Fa = True, False
# hand-built batch of three 64 x 64 images (pixel boxes written out; stored normalised)
# image 0: labels class 0 exhaustively, class 2 verified absent, class 1 unknown; an ignore box over [0, 20) x [0, 20);
#          a class-0 GT and a class-1 GT (boxed, though class 1 is not exhaustive: its positives must stay)
# image 1: no class lists (fully labelled), one class-1 GT
# image 2: two tiles over the top half (left: class 0 labelled; right: class 1 labelled, class 2 negative), the bottom
#          half in no tile; no GT
GT = [(0, 0, (36, 36, 60, 60)), (0, 1, (4, 36, 28, 60)), (1, 1, (8, 8, 30, 30))]
TILES = [(0, (0, 0, 64, 64), [T, Fa, T], [T, Fa, T]), (1, (0, 0, 64, 64), [T, T, T], [Fa, Fa, Fa]),
         (2, (0, 0, 32, 32), [T, Fa, Fa], [T, Fa, Fa]), (2, (32, 0, 64, 32), [Fa, T, T], [Fa, T, T])]
IGNORE = [(0, (0, 0, 20, 20))]



def _xywh(box):
    x1, y1, x2, y2 = box
    return [(x1 + x2) / 2 / IMGSZ, (y1 + y2) / 2 / IMGSZ, (x2 - x1) / IMGSZ, (y2 - y1) / IMGSZ]


def _batch(img, partial=True, tiles=TILES, ignore=IGNORE):
    b = {"img": img, "batch_idx": torch.tensor([float(i) for i, _, _ in GT]),
         "cls": torch.tensor([[float(c)] for _, c, _ in GT]), "bboxes": torch.tensor([_xywh(x) for *_, x in GT])}
    if partial:
        b.update(tile_batch_idx=torch.tensor([float(i) for i, *_ in tiles]),
                 tile_bboxes=torch.tensor([_xywh(x) for _, x, _, _ in tiles]),
                 tile_known=torch.tensor([k for *_, k, _ in tiles]), tile_explicit=torch.tensor([e for *_, e in tiles]))
        if ignore:
            b.update(ignore_batch_idx=torch.tensor([float(i) for i, _ in ignore]),
                     ignore_bboxes=torch.tensor([_xywh(x) for _, x in ignore]))
    return b


def _centres():
    """(84, 2) anchor centres of a 64 px image, level by level, row by row, written out independently."""
    return torch.tensor([((x + 0.5) * s, (y + 0.5) * s) for s in (8, 16, 32) for y in range(IMGSZ // s)
                         for x in range(IMGSZ // s)])  # fmt: skip


def _expected():
    """known (3, 84, C), explicit (3, 84, C), ignored (3, 84) for the hand-built batch."""
    c = _centres()
    n = len(c)
    known, explicit = torch.ones(3, n, NC, dtype=torch.bool), torch.zeros(3, n, NC, dtype=torch.bool)
    known[0], explicit[0] = torch.tensor([T, Fa, T]), torch.tensor([T, Fa, T])
    left, right = (c[:, 0] < 32) & (c[:, 1] < 32), (c[:, 0] >= 32) & (c[:, 1] < 32)
    for mask, lists in ((left, [T, Fa, Fa]), (right, [Fa, T, T]), (~(left | right), [Fa, Fa, Fa])):
        known[2][mask] = explicit[2][mask] = torch.tensor(lists)
    ignored = torch.zeros(3, n, dtype=torch.bool)
    ignored[0] = (c[:, 0] < 20) & (c[:, 1] < 20)
    return known, explicit, ignored


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = DetectionModel("yolov8n.yaml", nc=NC, verbose=False)
    m.args = train_args()
    m.train()
    img = torch.rand(3, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        preds = m(img)
    return SimpleNamespace(m=m, img=img, preds={k: (v.detach() if torch.is_tensor(v) else [f.detach() for f in v])
                                                for k, v in preds.items()})


def _terms(loss, preds, batch):
    """The Terms the loss builds, before any method ran."""
    a = loss.assign(preds, batch)
    targets = a.target_scores.to(a.pred_scores.dtype)
    t = Terms(a, loss.bce(a.pred_scores, targets), targets, a.fg_mask, a.target_scores)
    t.batch = batch
    return t


def _loss(net, **kw):
    net.m.args = train_args(**kw)
    return PartialDetectionLoss(net.m)


# ----------------------------------------------------------------------------------------------- exact masks
def test_hand_built_masks_exact(net):
    """Not-labelled class, verified negative, ignore box over some anchor centres, tiles and a tile-less region."""
    loss = _loss(net, class_partial=True)
    t = _terms(loss, net.preds, _batch(net.img))
    loss.method("class_partial").apply(t)
    known, explicit, ignored = _expected()
    assert int(ignored[0].sum()) == 6  # stride 8: 4 centres, stride 16: 1, stride 32: 1
    assert torch.equal(t.asserted, explicit & ~ignored[..., None])
    assert torch.equal(t.bg_ignore, ~known | ignored[..., None])
    bg = t.targets <= 0
    assert t.stats["cp_drop"].item() == (~known & ~ignored[..., None] & bg).sum().item()
    assert t.stats["cp_ignore"].item() == 6
    # positives stay, even of the unknown class 1 in image 0 and inside the ignore box
    cls = t.classification()
    assert (t.targets[0, :, 1] > 0).any() and torch.equal(cls[~bg], t.cls_elem[~bg])
    assert torch.equal(cls[bg & t.bg_ignore], torch.zeros_like(cls[bg & t.bg_ignore]))


def test_loss_value_matches_reference(net):
    """The classification term is the stock BCE with the unasserted background elements left out; box terms stock."""
    batch = _batch(net.img)
    l, items = _loss(net, class_partial=True)(net.preds, batch)
    net.m.args = train_args()
    _, stock = v8DetectionLoss(net.m)(net.preds, _batch(net.img, partial=False))
    a = _loss(net).assign(net.preds, batch)
    known, _, ignored = _expected()
    elem = F.binary_cross_entropy_with_logits(a.pred_scores, a.target_scores, reduction="none")
    elem = elem.masked_fill((~known | ignored[..., None]) & (a.target_scores <= 0), 0.0)
    ref = elem.sum() / a.target_scores.sum().clamp(min=1) * DEFAULT_CFG_DICT["cls"]
    torch.testing.assert_close(items["cls_loss"], ref, rtol=1e-6, atol=0)
    assert torch.equal(items["box_loss"], stock["box_loss"]) and torch.equal(items["dfl_loss"], stock["dfl_loss"])
    assert items["cls_loss"] < stock["cls_loss"]


def test_reweight_matches_reference(net):
    """partial_reweight=True: each class's kept background elements scaled by (anchors outside ignore boxes) / (those
    where the class is known), capped at 10; positives and dropped elements as without it; off = the plain loss."""
    batch = _batch(net.img)
    _, items = _loss(net, class_partial=True, partial_reweight=True)(net.preds, batch)
    _, plain = _loss(net, class_partial=True, partial_reweight=False)(net.preds, _batch(net.img))
    a = _loss(net).assign(net.preds, batch)
    known, _, ignored = _expected()
    kept = known & ~ignored[..., None]
    n_all = float((~ignored).sum())  # 3 images x 84 anchors - 6 in the ignore box
    assert n_all == 3 * 84 - 6
    scale = []
    for c in range(NC):  # counted class by class, independently of background_weights' broadcasting
        n_c = float(kept[..., c].sum())
        scale.append(min(max(n_all / n_c, 1.0), 10.0))
    elem = F.binary_cross_entropy_with_logits(a.pred_scores, a.target_scores, reduction="none")
    bg = a.target_scores <= 0
    for c in range(NC):
        elem[..., c] = torch.where(kept[..., c] & bg[..., c], elem[..., c] * scale[c], elem[..., c])
    elem = elem.masked_fill((~known | ignored[..., None]) & bg, 0.0)
    ref = elem.sum() / a.target_scores.sum().clamp(min=1) * DEFAULT_CFG_DICT["cls"]
    torch.testing.assert_close(items["cls_loss"], ref, rtol=1e-6, atol=0)
    assert scale[0] < scale[1] and all(s > 1 for s in scale)  # class 1 is known on the fewest anchors
    assert items["cls_loss"] > plain["cls_loss"]
    assert torch.equal(items["box_loss"], plain["box_loss"]) and torch.equal(items["dfl_loss"], plain["dfl_loss"])


def test_reweight_is_one_where_every_class_is_known():
    """A batch that asserts every class everywhere (a fully labelled one) keeps every factor at 1."""
    from yolo_partial.losses.class_partial import background_weights

    known = torch.ones(2, 10, NC, dtype=torch.bool)
    ignored = torch.zeros(2, 10, dtype=torch.bool)
    ignored[0, :3] = True
    targets = torch.zeros(2, 10, NC)
    assert torch.equal(background_weights(known, ignored, targets), torch.ones(2, 10, NC))
    known[1, :, 2] = False  # class 2 known on 7 of 17 anchors outside the ignore box
    w = background_weights(known, ignored, targets)
    assert torch.allclose(w[0, 3:, 2], torch.full((7,), 17 / 7)) and torch.equal(w[1, :, 2], torch.ones(10))
    assert torch.equal(w[..., :2], torch.ones(2, 10, 2))
    # half precision (AMP): 16 images x 8400 anchors overflow float16 as a count, not as a factor
    known = torch.ones(16, 8400, NC, dtype=torch.bool)
    known[8:, :, 0] = False
    w = background_weights(known, torch.zeros(16, 8400, dtype=torch.bool), torch.zeros(16, 8400, NC).half())
    assert w.dtype == torch.float16 and torch.equal(w[:8, :, 0], torch.full((8, 8400), 2.0).half())


def test_image_lists_per_point():
    """The per-point lookup on its own: half-open tile edges, the all-tiles fallback, and no tile at all."""
    batch = _batch(None)
    pts = torch.tensor([[31.9, 5.0], [32.0, 5.0], [10.0, 40.0]])
    known, explicit, ignored = image_lists(batch, 2, pts, (IMGSZ, IMGSZ), NC)
    assert known.tolist() == [[T, Fa, Fa], [Fa, T, T], [Fa, Fa, Fa]] and explicit.tolist() == known.tolist()
    assert not ignored.any()
    known, explicit, ignored = image_lists(batch, 5, pts, (IMGSZ, IMGSZ), NC)  # an image without tiles
    assert known.all() and not explicit.any() and not ignored.any()


# ----------------------------------------------------------------------------------------------- stock when off
def test_stock_without_partial_information(net):
    """class_partial=True on a batch without markers (the validator's), or with tiles that assert everything and no
    ignore box, is stock exactly; the default keys build no class-partial method."""
    net.m.args = train_args()
    ref, ref_items = v8DetectionLoss(net.m)(net.preds, _batch(net.img, partial=False))
    assert _loss(net).method("class_partial") is None
    full = [(i, (0, 0, 64, 64), [T, T, T], [Fa, Fa, Fa]) for i in range(3)]
    for batch in (_batch(net.img, partial=False), _batch(net.img, tiles=full, ignore=[])):
        loss, items = _loss(net, class_partial=True)(net.preds, batch)
        assert torch.equal(loss, ref)
        assert all(torch.equal(items[k], ref_items[k]) for k in ref_items)
        assert items["cp_ignore"] == 0 and items["cp_drop"] == 0


# ----------------------------------------------------------------------------------------------- composition
def _captured(net, batch, **kw):
    """The Terms after every method ran (captured where the loss reads the classification elements)."""
    seen = {}
    orig = Terms.classification

    def grab(self):
        seen["t"] = self
        return orig(self)

    Terms.classification = grab
    try:
        _loss(net, **kw)(net.preds, batch)
    finally:
        Terms.classification = orig
    return seen["t"]


def test_brl_never_recalibrates_an_asserted_class(net):
    """Confident scores everywhere: BRL mirrors terms only where nothing is asserted (image 1, no lists)."""
    preds = {**net.preds, "scores": torch.full_like(net.preds["scores"], 3.0)}  # p = 0.95 > 1 - t
    batch = _batch(net.img)
    a = _captured(SimpleNamespace(m=net.m, preds=preds), batch, class_partial=True, brl=True, brl_t=0.99)
    b = _captured(SimpleNamespace(m=net.m, preds=preds), batch, class_partial=True, brl=True, brl_t=0.0)
    ref = _captured(SimpleNamespace(m=net.m, preds=preds), batch, class_partial=True)  # no BRL at all
    asserted = a.asserted
    assert asserted.any() and torch.equal(a.cls_elem[asserted], b.cls_elem[asserted])
    assert torch.equal(a.cls_elem[asserted], ref.cls_elem[asserted])  # neither mirrored nor scaled by brl_weight
    assert not torch.equal(a.cls_elem[1], b.cls_elem[1])  # image 1 asserts nothing explicitly: recalibrated
    assert a.stats["brl_recal"] > 0


def test_bpr_never_drops_an_asserted_class(net):
    """drop_neg_obj=1 drops every negative background anchor, but keeps the asserted classes' terms there."""
    batch = _batch(net.img)
    t = _captured(net, batch, class_partial=True, drop_neg_obj=1.0)
    ref = _terms(_loss(net), net.preds, batch)
    bg = t.targets <= 0
    assert t.stats["obj_drop"] > 0
    keep = t.asserted & bg
    assert keep.any() and torch.equal(t.cls_elem[keep], ref.cls_elem[keep])
    dropped = ~t.asserted & bg & (t.cls_elem == 0) & (ref.cls_elem > 0)
    assert dropped[1].any()  # image 1 (no explicit lists): its negatives are dropped


def test_bpr_counts_no_fully_asserted_anchor(net):
    """An anchor whose every class is asserted has nothing to drop, so it is no BPR candidate: with image 1 labelled
    exhaustively for every class, drop_neg_obj=1 drops exactly the other images' candidates."""
    tiles = [*TILES[:1], (1, (0, 0, 64, 64), [T, T, T], [T, T, T]), *TILES[2:]]
    t = _captured(net, _batch(net.img, tiles=tiles), class_partial=True, drop_neg_obj=1.0)
    neg = ~t.a.fg_mask & (t.region_iou("pred") < net.m.args.neg_iou) & t.labelled()  # (B, A) BPR's negatives
    full = t.asserted.all(-1)
    assert full[1].all() and neg[1].any()
    assert t.stats["obj_drop"] == (neg & ~full).sum() < neg.sum()


def test_comining_drops_pseudo_boxes_of_asserted_classes():
    view = _batch(None)
    rows = [  # image, class, centre (px) -> kept?
        (0, 0, (48, 48), False),  # class 0 labelled in image 0
        (0, 1, (48, 48), True),  # class 1 unknown there: mining may add it
        (0, 2, (10, 10), True),  # inside the ignore box nothing is asserted
        (0, 2, (40, 20), False),  # class 2 verified absent
        (1, 0, (40, 40), True),  # image 1 has no explicit lists
        (2, 1, (10, 10), True),  # left tile labels class 0 only
        (2, 1, (48, 10), False),  # right tile labels class 1
        (2, 0, (20, 50), True),  # no tile: only what all tiles assert (nothing)
    ]
    pseudo = {"batch_idx": torch.tensor([float(r[0]) for r in rows]), "cls": torch.tensor([[float(r[1])] for r in rows]),
              "bboxes": torch.tensor([[x / IMGSZ, y / IMGSZ, 4 / IMGSZ, 4 / IMGSZ] for *_, (x, y), _ in rows])}
    out = drop_asserted(pseudo, view)
    assert out["cls"].view(-1).tolist() == [float(r[1]) for r in rows if r[3]]
    assert drop_asserted(pseudo, {k: v for k, v in view.items() if "tile" not in k and "ignore" not in k}) is pseudo


def test_comining_carries_the_masks_into_each_view(net):
    batch = add_jittered_view(_batch(net.img), p=0.0)
    assert batch["tile_batch_idx"].tolist() == [0, 1, 2, 2, 3, 4, 5, 5] and batch["ignore_batch_idx"].tolist() == [0, 3]
    v1 = _view(batch, 1, 3)
    ref = _batch(net.img)
    for k in ("tile_batch_idx", "tile_bboxes", "tile_known", "tile_explicit", "ignore_batch_idx", "ignore_bboxes"):
        assert torch.equal(v1[k], ref[k]), k
    # through the loss: an untrained model mines many boxes at a tiny threshold; none of an asserted class survives
    net.m.args = train_args(class_partial=True, comining=True, cm_score=1e-4)
    crit = CoMiningLoss(PartialDetectionLoss(net.m), 1e-4, 0.5, 0.4)
    mined = crit.mine(net.preds, _batch(net.img))
    raw = pseudo_labels(net.preds, crit.decoder, _batch(net.img), 1e-4, 0.5, 0.4)
    assert 0 < len(mined["cls"]) < len(raw["cls"])
    for b, c, (x, y) in zip(mined["batch_idx"].long().tolist(), mined["cls"].view(-1).long().tolist(),
                            (mined["bboxes"][:, :2] * IMGSZ).tolist()):
        _, explicit, ignored = image_lists(_batch(net.img), b, torch.tensor([[x, y]]), (IMGSZ, IMGSZ), NC)
        assert not explicit[0, c] or ignored[0]


def test_objectness_head_ignore_boxes_drop_objectness_terms():
    from yolo_partial.losses import partial_criterion
    from yolo_partial.models import resolve_model

    torch.manual_seed(0)
    m = DetectionModel(resolve_model("yolov5n-obj.yaml"), nc=NC, verbose=False)
    m.args = train_args(class_partial=True, imgsz=IMGSZ)
    m.train()
    img = torch.rand(1, 3, IMGSZ, IMGSZ)
    preds = m(img)
    empty = {"img": img, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    crit = partial_criterion(m)
    _, plain = crit(preds, empty)
    everywhere = {**empty, "ignore_batch_idx": torch.zeros(1), "ignore_bboxes": torch.tensor([[0.5, 0.5, 1.0, 1.0]])}
    _, items = crit(preds, everywhere)
    assert plain["obj_loss"] > 0 and items["obj_loss"] == 0  # no GT and all ignored: no objectness term left
    assert items["cp_ignore"] == sum(3 * (IMGSZ // s) ** 2 for s in (8, 16, 32))


# ----------------------------------------------------------------------------------------------- trainer decisions
def _class_sources(full_yaml: Path, out: Path) -> list[Path]:
    """Two sources of the shapes images: classes 0-2 on even-numbered images, 3-5 on odd ones (3-class YAMLs)."""
    cfg = yaml.safe_load(full_yaml.read_text())
    root, names = Path(cfg["path"]), cfg["names"]
    yamls = []
    for k, group in enumerate(((0, 1, 2), (3, 4, 5))):
        src = out / f"source{k}"
        for split in ("train", "val"):
            (src / "images" / split).mkdir(parents=True)
            (src / "labels" / split).mkdir(parents=True)
            for im in sorted((root / "images" / split).iterdir())[k::2]:
                shutil.copy(im, src / "images" / split / im.name)
                rows = [ln.split() for ln in (root / "labels" / split / f"{im.stem}.txt").read_text().splitlines()]
                kept = [" ".join([str(group.index(int(r[0])))] + r[1:]) + "\n" for r in rows if int(r[0]) in group]
                (src / "labels" / split / f"{im.stem}.txt").write_text("".join(kept))
        (src / "data.yaml").write_text(yaml.safe_dump({"path": str(src), "train": "images/train", "val": "images/val",
                                                       "names": {j: names[c] for j, c in enumerate(group)}}))
        yamls.append(src / "data.yaml")
    return yamls


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return shapes.generate(tmp_path_factory.mktemp("shapes") / "s", n_train=12, n_val=4).parent


@pytest.fixture(scope="module")
def merged(shapes_root, tmp_path_factory):
    from yolo_partial.merge import merge_datasets

    out = tmp_path_factory.mktemp("merged")
    return merge_datasets([str(y) for y in _class_sources(shapes_root / "full.yaml", out)], out / "merged")


def test_trainer_decides_from_the_data(merged, shapes_root, tmp_path):
    kw = {"project": str(tmp_path), "model": "yolov8n.yaml", "imgsz": IMGSZ}
    on = PartialDetectionTrainer(overrides={"data": str(merged), "name": "on", **kw})
    assert on.args.class_partial and isinstance(on.methods[0], ClassPartial) and on.partial_labels is not None
    off = PartialDetectionTrainer(overrides={"data": str(merged), "name": "off", "class_partial": False, **kw})
    assert not off.args.class_partial and not off.methods
    stock = PartialDetectionTrainer(overrides={"data": str(shapes_root / "full.yaml"), "name": "stock", **kw})
    assert not stock.args.class_partial and stock.partial_labels is None and not stock.methods
    with pytest.raises(PartialConfigError, match="class_partial=True needs a data YAML that names a partial: file"):
        PartialDetectionTrainer(overrides={"data": str(shapes_root / "full.yaml"), "name": "bad", "class_partial": True,
                                           **kw})
    assert not (tmp_path / "bad").exists()


def test_objectness_head_refuses_class_lists(merged, tmp_path):
    from yolo_partial.models import resolve_model

    t = PartialDetectionTrainer(overrides={"data": str(merged), "project": str(tmp_path), "name": "obj",
                                           "model": "yolov5n-obj.yaml", "imgsz": IMGSZ, "workers": 0})
    t.model = DetectionModel(resolve_model("yolov5n-obj.yaml"), nc=6, verbose=False)
    with pytest.raises(PartialConfigError, match="class lists .* are not supported by the objectness head"):
        t.build_dataset(t.data["train"], "train", 4)


# ----------------------------------------------------------------------------------------------- transport
AUG = dict(model="yolov8n.yaml", imgsz=IMGSZ, mosaic=1.0, degrees=10.0, translate=0.2, scale=0.5, shear=2.0,
           fliplr=0.5, workers=0, plots=False)  # fmt: skip
IGNORE_BOXES = {0: [[0.3, 0.3, 0.4, 0.4]], 1: [[0.7, 0.6, 0.3, 0.5]], 3: [[0.5, 0.5, 0.2, 0.2], [0.2, 0.8, 0.3, 0.3]]}


def _trainer(data, tmp_path, name, **kw):
    t = PartialDetectionTrainer(overrides={"data": str(data), "project": str(tmp_path), "name": name, **AUG, **kw})
    t.model = DetectionModel("yolov8n.yaml", nc=len(t.data["names"]), verbose=False)  # build_dataset reads its stride
    return t


def _seeded(dataset, i, seed):
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return dataset[i]


def test_masks_follow_mosaic_and_affine(shapes_root, tmp_path):
    """Ignore boxes and tiles split out in preprocess_batch equal the same augmentation run with them as ordinary
    labels (ignore boxes as class 6, each image's whole-image tile as class 7 + its row of class lists)."""
    names = dict(enumerate(shapes.CLASS_NAMES))
    src = shapes_root / "full"
    a_root, b_root = tmp_path / "a", tmp_path / "b"
    shutil.copytree(src, a_root)
    images = sorted((a_root / "images" / "train").iterdir())
    entries = {f"images/train/{im.name}": {"labeled_classes": [0, 1, 2] if i % 2 == 0 else [3, 4],
                                           **({"negative_classes": [5]} if i % 2 else {}),
                                           **({"ignore": IGNORE_BOXES[i]} if i in IGNORE_BOXES else {})}
               for i, im in enumerate(images)}
    write_partial(a_root / "partial.json", entries, shapes.CLASS_NAMES)
    (a_root / "data.yaml").write_text(yaml.safe_dump({"path": str(a_root), "train": "images/train", "val": "images/val",
                                                      "partial": "partial.json", "names": names}))
    ta = _trainer(a_root / "data.yaml", tmp_path, "a")
    a = ta.build_dataset(ta.data["train"], "train", 4)
    table = ta.methods[0].table
    assert type(a) is MarkedDataset and len(table.known) == 2
    shutil.copytree(src, b_root)
    for i, im in enumerate(images):
        lb = b_root / "labels" / "train" / f"{im.stem}.txt"
        extra = "".join(f"6 {' '.join(map(str, box))}\n" for box in IGNORE_BOXES.get(i, []))
        row = table.row_of[a.im_files[i]]
        lb.write_text(lb.read_text() + extra + f"{7 + row} 0.5 0.5 1.0 1.0\n")
    b_names = {**names, 6: "ignore", 7: "tile0", 8: "tile1"}
    (b_root / "data.yaml").write_text(yaml.safe_dump({"path": str(b_root), "train": "images/train",
                                                      "val": "images/val", "names": b_names}))
    tb = _trainer(b_root / "data.yaml", tmp_path, "b")
    b = tb.build_dataset(tb.data["train"], "train", 4)
    assert type(b) is YOLODataset and max(lb["cls"].max() for lb in a.labels) < 6
    n_ignore = multi_tile = mixed = 0
    for step in range(3):
        idx = [4 * step + j for j in range(4)]
        batch_a = YOLODataset.collate_fn([_seeded(a, i, 100 * step + i) for i in idx])
        batch_b = YOLODataset.collate_fn([_seeded(b, i, 100 * step + i) for i in idx])
        assert torch.equal(batch_a["img"], batch_b["img"])  # the very same augmentation ran on both
        out = ta.preprocess_batch(batch_a)
        cls_b = batch_b["cls"].view(-1)
        real, ign, tile = cls_b < 6, cls_b == 6, cls_b >= 7
        assert out["cls"].max() < 6  # no marker reaches the loss
        for k, rows in (("", real), ("ignore_", ign), ("tile_", tile)):
            torch.testing.assert_close(out[f"{k}bboxes"], batch_b["bboxes"][rows], rtol=0, atol=1e-6)
            torch.testing.assert_close(out[f"{k}batch_idx"], batch_b["batch_idx"][rows], rtol=0, atol=0)
        torch.testing.assert_close(out["cls"], batch_b["cls"][real], rtol=0, atol=0)
        row = (cls_b[tile] - 7).long().numpy()
        assert torch.equal(out["tile_known"], torch.from_numpy(table.known[row]))
        assert torch.equal(out["tile_explicit"], torch.from_numpy(table.explicit[row]))
        n_ignore += int(ign.sum())
        counts = torch.bincount(out["tile_batch_idx"].long(), minlength=4)
        multi_tile += int((counts > 1).sum())
        mixed += sum(len(set(row[(out["tile_batch_idx"] == j).numpy()])) > 1 for j in range(4))
    assert n_ignore > 0 and multi_tile > 0 and mixed > 0  # mosaic tiles of both kinds of images met in one image


# ----------------------------------------------------------------------------------------------- split carries partial:
def test_split_carries_partial(merged, tmp_path):
    from yolo_partial.split import split_dataset

    out = split_dataset(merged, mode="hard", seed=0, out=tmp_path / "hard")
    assert yaml.safe_load(out.read_text())["partial"] == "partial.json"
    src, new = load_for_data(merged), load_for_data(out)
    removed = json.loads((out.parent / "hidden.json").read_text())["removed"]
    lost = {}
    for r in removed:
        lost.setdefault(r["image"], set()).add(r["cls"])
    assert lost
    n_train = n_eval = 0
    for rel, entry in src.entries.items():
        got = new.for_image(src.root / rel)
        if "/images/train/" in rel:
            got = new.for_image(out.parent / rel)
            n_train += 1
            assert got.labeled == entry.labeled - lost.get(rel, set()) and got.negative == entry.negative
        else:  # val images: read from the source, listed by absolute path
            n_eval += 1
            assert got == entry
    assert n_train == 12 and n_eval == 4 and any(rel in lost for rel in src.entries)


def test_partial_file_naming_a_foreign_image_is_refused(merged, tmp_path):
    from yolo_partial.errors import PartialDataError

    bad = tmp_path / "bad"
    shutil.copytree(merged.parent, bad, symlinks=True)
    text = (bad / "partial.json").read_text().replace("000000.jpg", "999999.jpg")
    (bad / "partial.json").write_text(text)
    with pytest.raises(PartialDataError, match=r'partial.json: image ".*999999.jpg".* is not an image of the dataset'):
        PartialDetectionTrainer(overrides={"data": str(bad / "data.yaml"), "project": str(tmp_path / "runs"),
                                           "name": "x", "model": "yolov8n.yaml", "imgsz": IMGSZ})
    assert not (tmp_path / "runs" / "x").exists()
