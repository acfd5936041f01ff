"""YOLOv5's loss (its ComputeLoss) for the ObjectnessDetect head, with the partial-label policies BPR, BRL and SCB.

Terms, as in YOLOv5 with hyp.scratch-low: CIoU box loss on the matched predictions, objectness BCE over every cell with
target = CIoU (clamped at 0) on matched cells and 0 elsewhere, level weights 4.0 / 1.0 / 0.4, class BCE on matched
predictions, gains box 0.05 and cls 0.5 x nc/80 and obj 1.0 x (imgsz/640)^2, each x 3/nl. Ultralytics' `box` and `cls` keys
scale these in proportion to their defaults (box 7.5, cls 0.5; cls scales obj and cls, the two terms Ultralytics' cls
term covers), so the defaults give YOLOv5's loss exactly; `dfl` has no term on this head. Where several matches share a cell its objectness target is their highest IoU (YOLOv5's
sort_obj_iou choice; its default leaves it to the scatter order).

The policies act where the BPR paper acts:
- BPR objectness: negative cells (unmatched, predicted box's best-GT IoU < neg_iou) are drawn for removal from the
  objectness BCE; each level's BCE is then the mean over its remaining cells.
- BPR box: matched predictions whose predicted box's best-GT IoU < neg_iou are drawn for removal from the box term;
  each level's box loss is the mean over its remaining matches.
- BRL: the objectness BCE becomes BRL's focal / recalibrated loss, confusion cells being unmatched cells with best-GT
  IoU < brl_iou (objectness is this head's background decision; class BCE only sees matched predictions). The mean over
  cells stays, as with YOLOv5's own focal option.
- SCB: a GT matched by M_i predictions weights their class BCE, and the objectness BCE of the cells whose target it set,
  by W_i (scb_box: their box term too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.ops import xywh2xyxy

from ..errors import PartialConfigError
from ..keys import get_arg, method_args
from ..models.objectness import decode_boxes
from .class_partial import cell_centres
from .geometry import best_gt_iou, train_outputs
from .method import find_method
from .registry import build_methods

GAINS = {"box": 0.05, "obj": 1.0, "cls": 0.5}  # YOLOv5's hyp.scratch-low, before the level/size/class scaling
# Ultralytics' default box and cls gains: a user's box=/cls= scales YOLOv5's gains by the ratio to these, so the
# defaults give YOLOv5's own loss; cls scales obj too, since Ultralytics' cls term also carries the background decision
ULTRALYTICS_GAINS = {"box": 7.5, "cls": 0.5}
ANCHOR_T = 4.0  # a GT matches an anchor when neither side ratio exceeds this
BALANCE = {3: (4.0, 1.0, 0.4)}  # objectness weight per level, P3 first
BALANCE_DEFAULT = (4.0, 1.0, 0.25, 0.06, 0.02)
# the matched cell, and its left / upper / right / lower neighbour when the GT centre lies in that half of the cell
NEIGHBOURS = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0), (0.0, -0.5))


@dataclass
class Matches:
    """Predictions matched to GTs at one level; n matches, all tensors on the targets' device."""

    b: torch.Tensor  # (n,) image
    a: torch.Tensor  # (n,) anchor
    gj: torch.Tensor  # (n,) cell row
    gi: torch.Tensor  # (n,) cell column
    tbox: torch.Tensor  # (n, 4) target xywh in grid units, xy relative to the cell's corner
    anchor: torch.Tensor  # (n, 2) anchor wh in grid units
    cls: torch.Tensor  # (n,) class
    gt: torch.Tensor  # (n,) row of the GT in the batch's target list


def build_targets(
    shapes: list[tuple[int, int]], anchors: torch.Tensor, targets: torch.Tensor, anchor_t: float = ANCHOR_T
) -> list[Matches]:
    """YOLOv5's assignment: each GT matches every anchor of every level whose size ratio is within anchor_t, in its
    own cell and in the two neighbouring cells nearest its centre (not across the image border).

    Args:
        shapes (list[tuple[int, int]]): (H, W) of each level.
        anchors (torch.Tensor): (nl, na, 2) anchor wh in grid units of each level.
        targets (torch.Tensor): (nt, 6) rows of image index, class, x, y, w, h (normalised).
    """
    offsets = targets.new_tensor(NEIGHBOURS)
    out = []
    for (h, w), anc in zip(shapes, anchors):
        scale = targets.new_tensor([w, h, w, h])
        xywh = targets[:, 2:6] * scale
        ratio = xywh[None, :, 2:] / anc[:, None]  # (na, nt, 2)
        a, t = (torch.max(ratio, 1 / ratio).amax(2) < anchor_t).nonzero(as_tuple=True)
        gxy = xywh[t, :2]
        far = scale[:2] - gxy  # distance to the right / lower border
        near = torch.cat((torch.ones_like(gxy[None, :, 0], dtype=torch.bool),
                          ((gxy % 1 < 0.5) & (gxy > 1)).T, ((far % 1 < 0.5) & (far > 1)).T))  # fmt: skip
        k, j = near.nonzero(as_tuple=True)  # (5, m): which cell for which match
        a, t = a[j], t[j]
        gxy, gwh = xywh[t, :2], xywh[t, 2:]
        gij = (gxy - offsets[k]).long()
        out.append(
            Matches(
                targets[t, 0].long(), a, gij[:, 1].clamp(0, h - 1), gij[:, 0].clamp(0, w - 1),
                torch.cat((gxy - gij, gwh), 1), anc[a], targets[t, 1].long(), t,
            )  # fmt: skip
        )
    return out


def padded_gt(targets: torch.Tensor, bs: int, img_wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, 4) xyxy pixel GTs per image and their (B, N, 1) validity mask, from (nt, 6) YOLO target rows."""
    b = targets[:, 0].long()
    counts = torch.bincount(b, minlength=bs)
    n = int(counts.max()) if len(b) else 0
    order = torch.argsort(b, stable=True)
    rank = torch.arange(len(b), device=b.device) - (counts.cumsum(0) - counts)[b[order]]
    gt = targets.new_zeros(bs, n, 4)
    mask = torch.zeros(bs, n, 1, dtype=torch.bool, device=targets.device)
    gt[b[order], rank] = xywh2xyxy(targets[order, 2:6] * img_wh.repeat(2))
    mask[b[order], rank] = True
    return gt, mask


@dataclass
class Gathered:
    """One batch's predictions laid out for the loss: every cell of every level flattened to (B, A) level by level,
    anchor-major as in the head's output, and the n matches of all levels concatenated."""

    obj_logit: torch.Tensor  # (B, A)
    tobj: torch.Tensor  # (B, A) objectness target: the highest IoU of the cell's matches, else 0
    matched: torch.Tensor  # (B, A) bool
    cell_level: torch.Tensor  # (A,) level of each cell
    level: torch.Tensor  # (n,) level of each match
    flat: torch.Tensor  # (n,) each match's cell in obj_logit.view(-1)
    gt: torch.Tensor  # (n,) GT row of each match
    iou: torch.Tensor  # (n,) CIoU of each match's predicted box with its target
    cls_logit: torch.Tensor  # (n, nc)
    cls: torch.Tensor  # (n,)


@dataclass
class ObjectnessTerms:
    """The objectness head's element-wise terms while the methods shape them (B images, A cells, n matches)."""

    p: Gathered
    obj_elem: torch.Tensor  # (B, A) objectness BCE of every cell
    cls_elem: torch.Tensor  # (n, nc) class BCE of every match
    box_elem: torch.Tensor  # (n,) 1 - CIoU of every match
    keep_cell: torch.Tensor  # (B, A) bool, cells in the objectness mean
    keep_match: torch.Tensor  # (n,) bool, matches in the box mean
    n_gt: int  # GT rows of the batch (p.gt indexes them)
    max_iou_fn: Callable[[], torch.Tensor]
    prior_iou_fn: Callable[[], torch.Tensor]
    has_gt: torch.Tensor  # (B,) bool, images with at least one label
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    _max_iou: torch.Tensor | None = None
    _prior_iou: torch.Tensor | None = None
    batch: dict[str, Any] = field(default_factory=dict)  # the loss's batch (class-partial ignore boxes, issue 17)
    cell_xy: torch.Tensor | None = None  # (A, 2) pixel centre of each cell, flattened as obj_logit

    def max_iou(self) -> torch.Tensor:
        """(B, A) best-GT IoU of each cell's predicted box, computed once per batch."""
        if self._max_iou is None:
            self._max_iou = self.max_iou_fn()
        return self._max_iou

    def prior_iou(self) -> torch.Tensor:
        """(B, A) best-GT IoU of each cell's own anchor box placed at the cell centre: this head's fixed priors."""
        if self._prior_iou is None:
            self._prior_iou = self.prior_iou_fn()
        return self._prior_iou

    def labelled(self) -> torch.Tensor:
        """(B, 1) bool: images with at least one label."""
        return self.has_gt[:, None]


def gather(maps: list[torch.Tensor], matches: list[Matches]) -> Gathered:
    """Decode the matched predictions (YOLOv5's cell-relative boxes, grid units) and set the objectness targets."""
    bs, dev = maps[0].shape[0], maps[0].device
    sizes = [p.shape[1] * p.shape[2] * p.shape[3] for p in maps]
    start = [0, *torch.tensor(sizes).cumsum(0).tolist()[:-1]]
    obj_logit = torch.cat([p[..., 4].reshape(bs, -1) for p in maps], 1)
    picked = [p[m.b, m.a, m.gj, m.gi] for p, m in zip(maps, matches)]  # (n, 5 + nc) per level
    pxy = torch.cat([ps[:, :2].sigmoid() * 2 - 0.5 for ps in picked])
    pwh = torch.cat([(ps[:, 2:4].sigmoid() * 2) ** 2 * m.anchor for ps, m in zip(picked, matches)])
    iou = bbox_iou(torch.cat((pxy, pwh), 1), torch.cat([m.tbox for m in matches]), CIoU=True).squeeze(-1)
    cell = [s + (m.a * p.shape[2] + m.gj) * p.shape[3] + m.gi for s, m, p in zip(start, matches, maps)]
    flat = torch.cat([m.b for m in matches]) * obj_logit.shape[1] + torch.cat(cell)
    tobj = torch.zeros_like(obj_logit).view(-1).scatter_reduce_(0, flat, iou.detach().clamp(0), "amax")
    matched = torch.zeros_like(tobj, dtype=torch.bool).index_fill_(0, flat, True)
    return Gathered(
        obj_logit, tobj.view_as(obj_logit), matched.view_as(obj_logit),
        torch.repeat_interleave(torch.arange(len(maps), device=dev), torch.tensor(sizes, device=dev)),
        torch.cat([torch.full_like(m.b, i) for i, m in enumerate(matches)]), flat,
        torch.cat([m.gt for m in matches]), iou, torch.cat([ps[:, 5:] for ps in picked]),
        torch.cat([m.cls for m in matches]),
    )  # fmt: skip


class ObjectnessDetectionLoss:
    """YOLOv5's detection loss for ObjectnessDetect, with the partial-label methods read from `model.args`.

    Called as `loss(preds, batch)` like Ultralytics' criteria; returns `(loss_vec * batch_size, items)`, items holding
    box_loss, obj_loss, cls_loss and the enabled policies' per-batch counts (box_drop, obj_drop, brl_conf, brl_recal).
    """

    def __init__(self, model: torch.nn.Module):
        args = model.args
        self.methods = build_methods(method_args(args))
        for m in self.methods:
            if not m.OBJECTNESS:
                raise PartialConfigError(
                    f"{m.SWITCH}=True is not supported by the objectness head (yolov5*-obj.yaml): "
                    f"expected {m.SWITCH}=False, or an anchor-free model such as yolov8n.yaml")
        head = model.model[-1]
        self.nc, self.nl, self.na = head.nc, head.nl, head.na
        self.stride, self.anchor_wh = head.stride, head.anchor_wh  # pixels; grid units per call
        imgsz = get_arg(args, "imgsz", 640)
        imgsz = max(imgsz) if isinstance(imgsz, (list, tuple)) else imgsz
        box = get_arg(args, "box", ULTRALYTICS_GAINS["box"]) / ULTRALYTICS_GAINS["box"]
        cls = get_arg(args, "cls", ULTRALYTICS_GAINS["cls"]) / ULTRALYTICS_GAINS["cls"]
        level = 3 / self.nl
        self.gain = {
            "box": GAINS["box"] * level * box,
            "obj": GAINS["obj"] * (imgsz / 640) ** 2 * level * cls,
            "cls": GAINS["cls"] * self.nc / 80 * level * cls,
        }
        self.balance = BALANCE.get(self.nl, BALANCE_DEFAULT)
        self.class_weights = getattr(model, "class_weights", None)
        self.loss_names = ("box_loss", "obj_loss", "cls_loss")

    def method(self, name: str):
        """The enabled method called `name` (e.g. 'bpr'), or None when it is off."""
        return find_method(self.methods, name)

    def __call__(self, preds: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of the head's training output (or an (inference, training) tuple) for a batch of YOLO targets."""
        maps = [p.float() for p in train_outputs(preds)["maps"]]
        dev, bs = maps[0].device, maps[0].shape[0]
        stride = self.stride.to(dev)
        targets = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"]), 1).to(dev)
        shapes = [tuple(p.shape[2:4]) for p in maps]
        p = gather(maps, build_targets(shapes, self.anchor_wh.to(dev) / stride.view(-1, 1, 1), targets))

        t = ObjectnessTerms(
            p,
            F.binary_cross_entropy_with_logits(p.obj_logit, p.tobj, reduction="none"),
            F.binary_cross_entropy_with_logits(p.cls_logit, F.one_hot(p.cls, self.nc).float(), reduction="none"),
            1.0 - p.iou,
            torch.ones_like(p.matched),
            torch.ones_like(p.iou, dtype=torch.bool),
            len(targets),
            lambda: self._max_iou(maps, targets, stride),
            lambda: self._prior_iou(maps, targets, stride),
            torch.bincount(targets[:, 0].long(), minlength=bs)[:bs] > 0,
        )
        t.batch, t.cell_xy = batch, cell_centres([p.shape for p in maps], stride)  # issue 17
        for m in self.methods:
            m.apply_objectness(t)
        cls_elem = t.cls_elem if self.class_weights is None else t.cls_elem * self.class_weights.to(dev).view(1, -1)

        lobj = self._level_means(t.obj_elem, t.keep_cell, p.cell_level.expand_as(t.obj_elem))
        lbox = self._level_means(t.box_elem, t.keep_match, p.level)
        lcls = self._level_means(cls_elem.mean(1), torch.ones_like(t.keep_match), p.level)
        loss = torch.stack(
            (
                lbox.sum() * self.gain["box"],
                (lobj * lobj.new_tensor(self.balance[: self.nl])).sum() * self.gain["obj"],
                lcls.sum() * self.gain["cls"] * (self.nc > 1),  # YOLOv5 has no class term for one class
            )
        )
        items = {**dict(zip(self.loss_names, loss.detach())), **{k: v.detach() for k, v in t.stats.items()}}
        return loss * bs, items

    def _level_means(self, elem: torch.Tensor, keep: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """(nl,) mean of `elem` over the kept entries of each level (0 for a level with none), entries flattened."""
        keep = keep.reshape(-1)
        sums = elem.new_zeros(self.nl).index_add(0, level.reshape(-1), elem.reshape(-1) * keep)
        counts = torch.bincount(level.reshape(-1)[keep], minlength=self.nl)
        return sums / counts.clamp(min=1)

    def _prior_iou(self, maps: list[torch.Tensor], targets: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        """(B, A) IoU of each cell's anchor box, centred on the cell, with the best GT of its image (pixels)."""
        bs, dev = maps[0].shape[0], maps[0].device
        boxes = []
        for i, p in enumerate(maps):
            na, ny, nx = p.shape[1:4]
            gy, gx = torch.meshgrid(torch.arange(ny, device=dev), torch.arange(nx, device=dev), indexing="ij")
            centre = (torch.stack((gx, gy), -1).float() + 0.5) * stride[i]  # (ny, nx, 2)
            wh = self.anchor_wh[i].to(dev).view(na, 1, 1, 2).expand(na, ny, nx, 2)
            boxes.append(torch.cat((centre.expand(na, ny, nx, 2), wh), -1).reshape(-1, 4))
        boxes = xywh2xyxy(torch.cat(boxes))[None].expand(bs, -1, -1)
        h, w = maps[0].shape[2:4]
        gt, mask = padded_gt(targets, bs, targets.new_tensor([w, h]) * stride[0])
        return best_gt_iou(boxes, gt, mask)

    def _max_iou(self, maps: list[torch.Tensor], targets: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        """(B, A) IoU of each cell's predicted box (pixels) with the best GT of its image, 0 for images without GT."""
        bs = maps[0].shape[0]
        with torch.no_grad():
            anchors = self.anchor_wh.to(maps[0].device)
            boxes = torch.cat([decode_boxes(p, anchors[i], stride[i]).view(bs, -1, 4) for i, p in enumerate(maps)], 1)
            h, w = maps[0].shape[2:4]
            gt, mask = padded_gt(targets, bs, targets.new_tensor([w, h]) * stride[0])
            return best_gt_iou(xywh2xyxy(boxes), gt, mask)
