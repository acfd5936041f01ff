"""Co-mining (Wang et al., AAAI 2021): two views of every image mine pseudo labels for each other.

The trainer appends a colour-jittered copy of the batch (`add_jittered_view`), so a single forward pass of the stock
model, and of its DDP wrapper, sees both views. The copy's jitter is the reference's (`cm_jitter=reference`) or, with
`cm_jitter=hsv`, drawn from the trainer's own hsv_v/hsv_s/hsv_h ranges: the reference's hue shift of up to 0.2 of the
colour circle can turn a red object green where colour is part of the class (a fish species, a coloured marker), and
the copy's GT then names the wrong class (on the shapes data this was measured not to be what makes Co-mining lose:
README). The reference mines each class on its own (`cm_classes=any`): a label vetoes only pseudo boxes of its own
class, so a model that confuses two classes mines the other class's box on every labelled object it confuses.
`cm_classes=one` assumes an object has one class, as the teacher's `teacher_classes=one` does: no pseudo box on a label
of any class, and of pseudo boxes of different classes on one object (IoU above `cm_nms`) only the best-scored.
`CoMiningLoss` splits the predictions again, turns each view's detached
predictions into pseudo boxes for the other view (score threshold, class-wise NMS, no overlap with a same-class GT) and
returns the sum of the two views' losses. Inference uses one view, so the trained model is an ordinary detector.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torchvision.transforms import v2
from ultralytics.utils.loss import E2ELoss
from ultralytics.utils.metrics import box_iou
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import clip_boxes, xywh2xyxy, xyxy2xywh
from ultralytics.utils.tal import make_anchors

from ..keyspec import choice, flag, unit
from .class_partial import PARTIAL_KEYS, drop_asserted
from .geometry import train_outputs
from .method import Method

VIEWS = "cm_views"  # batch key of a two-view batch: images [0, B) are the originals, [B, 2B) their jittered copies
JITTER = (0.8, 0.8, 0.8, 0.2)  # brightness, contrast, saturation, hue of the reference's ColorJitter
JITTER_P = 0.8  # share of images jittered
JITTERS = ("reference", "hsv")  # cm_jitter's values (see the module docstring)
CLASS_RULES = ("any", "one")  # cm_classes's values (see the module docstring)
HIT_IOU = 0.5  # a pseudo box "finds" a hidden box at this IoU with the same class
MAX_PSEUDO = 300  # pseudo boxes per image at most (Ultralytics' max_det)
TARGET_KEYS = ("batch_idx", "cls", "bboxes")
HIDDEN_KEYS = ("hidden_batch_idx", "hidden_cls", "hidden_bboxes")


@torch.no_grad()
def color_jitter(img: torch.Tensor, p: float = JITTER_P, factors: tuple = JITTER) -> torch.Tensor:
    """A copy of (B, 3, H, W) float images in [0, 1] where each image, with probability p, gets torchvision's
    ColorJitter(*factors) (brightness, contrast, saturation, hue; the reference's 0.8, 0.8, 0.8, 0.2 by default): its
    own random factors and order of the adjustments; geometry unchanged."""
    jitter = v2.ColorJitter(*factors)
    out = img.clone()
    for i in (torch.rand(len(img)) < p).nonzero().flatten().tolist():
        out[i] = jitter(img[i])
    return out


def hsv_factors(args: Any) -> tuple[float, float, float, float]:
    """ColorJitter factors matching Ultralytics' RandomHSV ranges in `args`: value x (1 +- hsv_v) as brightness, no
    contrast, saturation x (1 +- hsv_s), a hue shift of up to hsv_h of the colour circle (ColorJitter allows 0.5)."""
    return float(args.hsv_v), 0.0, float(args.hsv_s), min(float(args.hsv_h), 0.5)


def add_jittered_view(batch: dict[str, Any], p: float = JITTER_P, factors: tuple = JITTER) -> dict[str, Any]:
    """Return the batch with a colour-jittered copy of every image appended: (2B, 3, H, W) images, labels duplicated.

    Label rows of copy i carry batch_idx i + B; per-image lists (im_file, shapes) are repeated; `VIEWS` marks the batch.
    """
    b = len(batch["img"])
    out = {k: (type(v)(list(v) * 2) if isinstance(v, (list, tuple)) and len(v) == b else v) for k, v in batch.items()}
    out["img"] = torch.cat((batch["img"], color_jitter(batch["img"], p, factors)))
    for idx, *rows in (TARGET_KEYS, HIDDEN_KEYS, *PARTIAL_KEYS):
        if idx in batch:
            out[idx] = torch.cat((batch[idx], batch[idx] + b))
            out.update({k: torch.cat((batch[k], batch[k])) for k in rows})
    out[VIEWS] = 2
    return out


def decode(preds: dict[str, torch.Tensor], decoder) -> torch.Tensor:
    """(B, 4 + nc, A) xywh pixel boxes and class probabilities, the layout Ultralytics' NMS takes, from the training
    outputs of one head branch, decoded as `decoder` (a v8DetectionLoss) decodes them for the loss."""
    anchors, strides = make_anchors(preds["feats"], decoder.stride, 0.5)
    xyxy = decoder.bbox_decode(anchors, preds["boxes"].float().permute(0, 2, 1)) * strides
    return torch.cat((xyxy2xywh(xyxy).permute(0, 2, 1), preds["scores"].float().sigmoid()), 1)


@torch.no_grad()
def pseudo_labels(preds: dict[str, torch.Tensor], decoder, gt: dict[str, torch.Tensor], score: float, nms: float,
                  gt_iou: float, classes: str = "any") -> dict[str, torch.Tensor]:
    """Co-generation: pseudo boxes from one view's predictions, in the batch's label format.

    Keeps predictions whose best class probability exceeds `score`, runs class-wise NMS at `nms`, clips to the image
    and drops every box whose IoU with a GT of its image and class exceeds `gt_iou`. With `classes='one'` a GT of any
    class drops it, and of the remaining boxes overlapping above `nms` only the best-scored stands (class-agnostic NMS).

    Args:
        preds (dict): Training outputs of the head branch used at inference: boxes (B, 4 * reg_max, A),
            scores (B, nc, A), feats (list of (B, C, h, w)).
        decoder (v8DetectionLoss): Loss whose stride and bbox_decode match that branch.
        gt (dict): The view's labels: batch_idx (n,), cls (n, 1), bboxes (n, 4) normalised xywh.
        score (float): Score threshold tau.
        nms (float): Class-wise NMS IoU theta1.
        gt_iou (float): Same-class GT overlap theta2 above which a pseudo box is dropped.
        classes (str): 'any' (the reference) or 'one' (see the module docstring).

    Returns:
        (dict): batch_idx (m,), cls (m, 1), bboxes (m, 4) normalised xywh; detached.
    """
    h, w = (s * int(decoder.stride[0]) for s in preds["feats"][0].shape[2:])
    scale = torch.tensor([w, h, w, h], device=preds["scores"].device, dtype=torch.float32)
    dets = non_max_suppression(decode(preds, decoder), conf_thres=score, iou_thres=nms, max_det=MAX_PSEUDO)
    gt_xyxy = xywh2xyxy(gt["bboxes"].float() * scale)
    rows = []
    for b, det in enumerate(dets):
        box, cls = clip_boxes(det[:, :4], (h, w)), det[:, 5]
        keep = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
        mine = gt["batch_idx"] == b
        if mine.any():
            over = box_iou(box, gt_xyxy[mine]) > gt_iou
            if classes == "any":
                over &= cls[:, None] == gt["cls"][mine].view(1, -1)
            keep &= ~over.any(1)
        if classes == "one" and int(keep.sum()) > 1:
            idx = keep.nonzero().flatten()
            keep = torch.zeros_like(keep)
            keep[idx[torchvision.ops.nms(box[idx], det[idx, 4], nms)]] = True
        rows.append(torch.cat((torch.full_like(cls[keep, None], b), cls[keep, None], box[keep]), 1))
    rows = torch.cat(rows) if rows else scale.new_zeros(0, 6)
    return {"batch_idx": rows[:, 0], "cls": rows[:, 1:2], "bboxes": xyxy2xywh(rows[:, 2:]) / scale}


def hidden_hits(pseudo: dict[str, torch.Tensor], view: dict[str, torch.Tensor], iou: float = HIT_IOU) -> torch.Tensor:
    """Number of pseudo boxes that overlap a hidden box of their image and class with IoU >= iou (a 0-dim tensor)."""
    if not len(pseudo["cls"]) or not len(view.get("hidden_cls", ())):
        return pseudo["cls"].new_zeros(())
    # normalised coordinates give the pixel IoU (both axes scale all areas alike); eps suits areas near 1e-5
    overlap = box_iou(xywh2xyxy(pseudo["bboxes"]), xywh2xyxy(view["hidden_bboxes"].float()), eps=1e-12)
    match = (overlap >= iou) & (pseudo["cls"] == view["hidden_cls"].view(1, -1))
    match &= pseudo["batch_idx"][:, None] == view["hidden_batch_idx"].view(1, -1)
    return match.any(1).sum().float()


def _take(x: Any, rows: slice) -> Any:
    """The rows of every tensor in a (nested) prediction structure: one view's half of a two-view forward pass."""
    if isinstance(x, torch.Tensor):
        return x[rows]
    if isinstance(x, dict):
        return {k: _take(v, rows) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_take(v, rows) for v in x)
    return x


def _view(batch: dict[str, Any], v: int, b: int) -> dict[str, torch.Tensor]:
    """The labels (and hidden boxes, when present) of view v of a two-view batch, image indices renumbered from 0."""
    out = {}
    for idx, *rows in (TARGET_KEYS, HIDDEN_KEYS, *PARTIAL_KEYS):
        if idx in batch:
            mine = (batch[idx] >= v * b) & (batch[idx] < (v + 1) * b)
            out[idx] = batch[idx][mine] - v * b
            out.update({k: batch[k][mine] for k in rows})
    return out


def _with_pseudo(gt: dict[str, torch.Tensor], pseudo: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GT plus pseudo boxes, ordered by image (v8DetectionLoss.preprocess expects rows grouped by batch_idx)."""
    merged = {k: torch.cat((gt[k].to(pseudo[k].dtype), pseudo[k])) for k in TARGET_KEYS}
    order = torch.argsort(merged["batch_idx"], stable=True)
    return {**gt, **{k: v[order] for k, v in merged.items()}}  # other keys (class-partial masks) kept


class CoMiningLoss:
    """Co-mining around a detection criterion: loss(original, GT + pseudo from copy) + loss(copy, GT + pseudo from
    original).

    Each view keeps the base criterion's normalisation for B images, so the result is the sum of two stock-scaled
    losses, as in the paper. Items: the two views' base items averaged, then `pseudo_n` (pseudo boxes added per image
    and view) and, with a hidden-box manifest, `pseudo_hit` (those of them matching a hidden box, per image and view;
    `pseudo_hit / pseudo_n` is the share that finds removed objects). The key set is fixed at construction. A batch
    without the two-view mark (the validator's) gets the base loss and zero counts.

    Args:
        base (v8DetectionLoss | E2ELoss): The per-view criterion (PartialDetectionLoss, or E2ELoss around it).
        score (float): Pseudo-label score threshold tau (cm_score).
        nms (float): Class-wise NMS IoU theta1 (cm_nms).
        gt_iou (float): Drop pseudo boxes overlapping a same-class GT above this (cm_gt_iou).
        hidden (bool): Whether batches carry hidden boxes (a manifest is known): adds the `pseudo_hit` item.
        classes (str): What mining may assume of an object's class (cm_classes): 'any' or 'one'.
    """

    def __init__(self, base, score: float, nms: float, gt_iou: float, hidden: bool = False, classes: str = "any"):
        self.base, self.score, self.nms, self.gt_iou, self.hidden = base, score, nms, gt_iou, hidden
        self.classes = classes
        # pseudo labels come from the branch the head uses at inference: one-to-one on end-to-end heads (YOLO26)
        self.branch = "one2one" if isinstance(base, E2ELoss) else None
        self.decoder = base.one2one if self.branch else base

    def update(self) -> None:
        """Advance the base criterion's per-epoch schedule (E2ELoss's branch weights), called by the trainer."""
        if hasattr(self.base, "update"):
            self.base.update()

    def __call__(self, preds: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (loss_vec * B summed over the two views, items) for a two-view batch of 2B images."""
        if batch.get(VIEWS) != 2:
            loss, items = self.base(preds, batch)
            zero = loss.new_zeros(()).detach()
            return loss, {**items, **self._counts(zero, zero)}
        preds = train_outputs(preds)
        b = len(batch["img"]) // 2
        halves = [_take(preds, slice(0, b)), _take(preds, slice(b, 2 * b))]
        views = [_view(batch, v, b) for v in (0, 1)]
        mined = [self.mine(halves[v], views[v]) for v in (0, 1)]  # view v's pseudo boxes supervise view 1 - v
        (l0, i0), (l1, i1) = (self.base(halves[v], _with_pseudo(views[v], mined[1 - v])) for v in (0, 1))
        n_views = 2 * b
        n = l0.new_tensor(sum(len(m["cls"]) for m in mined) / n_views)
        hits = (hidden_hits(mined[1], views[0]) + hidden_hits(mined[0], views[1])) / n_views if self.hidden else None
        items = {k: (i0[k] + i1[k]) / 2 for k in i0}
        return l0 + l1, {**items, **self._counts(n, hits)}

    def mine(self, preds: dict[str, Any], view: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pseudo boxes from one view's detached predictions (see `pseudo_labels`)."""
        preds = preds[self.branch] if self.branch else preds
        pseudo = pseudo_labels(preds, self.decoder, view, self.score, self.nms, self.gt_iou, self.classes)
        return drop_asserted(pseudo, view)  # never a class the image asserts there (class-partial labels)

    def _counts(self, n: torch.Tensor, hits: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"pseudo_n": n, "pseudo_hit": hits} if self.hidden else {"pseudo_n": n}


class CoMining(Method):
    """Co-mining as a method: two-view batches (trainer hook) and the CoMiningLoss wrapper around the criterion."""

    KEYS = {
        "comining": flag("Co-mining: two views of each batch mine pseudo labels for each other"),
        # measured for TAL-trained scores (benchmarks/results/comining_threshold.md); the reference's 0.6 was tuned on
        # RetinaNet's focal scores, which a TAL head never reaches: at 0.6 it mines almost nothing
        "cm_score": unit(0.35, True, True, "Co-mining: pseudo-label score threshold (measured for TAL scores)"),
        "cm_nms": unit(0.5, True, True, "Co-mining: class-wise NMS IoU on pseudo boxes"),
        "cm_gt_iou": unit(0.4, True, True, "Co-mining: drop pseudo boxes overlapping a same-class GT above this"),
        "cm_jitter": choice("reference", *JITTERS, help="Co-mining: the copy's colour jitter: 'reference' "
                            "(ColorJitter 0.8/0.8/0.8/0.2) or 'hsv' (the trainer's hsv_v/hsv_s/hsv_h ranges)"),
        "cm_classes": choice("any", *CLASS_RULES, help="Co-mining: 'any' (the reference: classes mined apart) or "
                             "'one' (one class per object: no pseudo box on any label, the best class per object)"),
    }
    OBJECTNESS = False  # the anchor-based head has no decoded per-anchor class scores to mine from
    NAME = "comining"
    SWITCH = "comining"

    def __init__(self, score: float, nms: float, gt_iou: float, jitter: str = "reference", classes: str = "any"):
        self.score, self.nms, self.gt_iou, self.jitter, self.classes = score, nms, gt_iou, jitter, classes

    @classmethod
    def from_args(cls, k: dict[str, Any]) -> CoMining | None:
        if not k["comining"]:
            return None
        return cls(k["cm_score"], k["cm_nms"], k["cm_gt_iou"], k["cm_jitter"], k["cm_classes"])

    def wrap(self, criterion: Any, context: dict[str, Any]) -> CoMiningLoss:
        return CoMiningLoss(criterion, self.score, self.nms, self.gt_iou, hidden=bool(context.get("hidden")),
                            classes=self.classes)

    def preprocess_batch(self, batch: dict[str, Any], trainer: Any) -> dict[str, Any]:
        """Hidden boxes split out of the labels, then the colour-jittered view appended."""
        from ..hidden_labels import split_hidden

        factors = JITTER if self.jitter == "reference" else hsv_factors(trainer.args)
        return add_jittered_view(split_hidden(batch), factors=factors)

    def setup_dataset(self, dataset: Any, mode: str, trainer: Any) -> None:
        """With a hidden-box manifest, the training set carries the hidden boxes through augmentation (pseudo_hit)."""
        if mode == "train" and getattr(trainer, "hidden_manifest", None):
            from ..hidden import load_manifest
            from ..hidden_labels import attach_hidden_boxes

            attach_hidden_boxes(dataset, load_manifest(trainer.hidden_manifest))
