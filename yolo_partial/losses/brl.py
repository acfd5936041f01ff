"""Background Recalibration Loss (Zhang et al., ICASSP 2020) on the classification term.

On *confusion* anchors (background anchors that overlap every GT by less than `brl_iou`, where unlabelled objects
hide) each class's negative term is replaced by the mirrored positive term once the model is confident (p > 1 - t),
so the model may trust itself over the missing label; the whole confusion term is scaled by `brl_weight`.

Two bases (`brl_base`), since the paper's detector is RetinaNet, whose baseline loss is focal:
- `bce` (default): every other anchor keeps the head's own BCE exactly; confusion anchors get the same family, the
  BCE negative -log(1 - p), or the BCE positive -log(p) once recalibrated. BRL then changes only confusion anchors,
  as it does in the reference relative to its own baseline.
- `focal`: the paper's form, sigmoid focal loss everywhere with the focal mirror. Focal terms of a fresh YOLO head are
  far smaller than its BCE terms (about 8x on a fresh yolov8n), while Ultralytics' `cls` gain is tuned for BCE, so the
  focal term is rescaled: by `brl_gain` when set, else by the ratio BCE sum / focal sum measured on the first batch the
  loss sees (a fresh model's terms then match in magnitude; resumed runs measure again at their first batch).

The confusion region (`brl_region`) is judged by each anchor's decoded box (`pred`) or by a fixed square prior box
of 4 x stride at the anchor point (`prior`), the stationary region of the reference's anchor-based assigner.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..keyspec import at_least, choice, flag, unit
from .method import Method, Terms


def sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float, alpha: float) -> torch.Tensor:
    """Element-wise sigmoid focal loss with soft targets, the form of Ultralytics' FocalLoss, shape of `logits`."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = targets * p + (1 - targets) * (1 - p)
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    return ce * (1.0 - p_t).pow(gamma) * alpha_t


class BackgroundRecalibration(Method):
    """Element-wise classification loss with background recalibration on confusion anchors.

    Args:
        t (float): Recalibration threshold; t=0 leaves the negative term everywhere.
        iou (float): Confusion region: best-GT IoU below this.
        weight (float): Scale of the confusion anchors' loss.
        mode (str): 'mirror' (BRL) or 'zero' (BRL-minus: the recalibrated part contributes nothing).
        gamma (float): Focal gamma (base 'focal').
        alpha (float): Focal alpha (base 'focal').
        base (str): 'bce' (the head's own loss) or 'focal' (the paper's).
        region (str): 'pred' (decoded boxes) or 'prior' (fixed prior boxes) for the confusion test.
        gain (float): Focal rescaling; 0 measures it on the first batch.
        partial_empty (bool): Images without labels have confusion anchors too (default: they are verified background).
    """

    NAME = "brl"
    KEYS = {
        "brl": flag("Background Recalibration Loss on the classification (objectness) term"),
        "brl_t": unit(0.5, False, True, "BRL: confident confusion anchors (p > 1 - t) get the mirrored term"),
        "brl_iou": unit(0.1, True, True, "BRL: confusion region, IoU with every GT below this"),
        "brl_weight": at_least(0.1, 0, "BRL: scale of the confusion anchors' loss"),
        "brl_mode": choice("mirror", "mirror", "zero", help="BRL: mirrored term, or nothing (the paper's BRL-minus)"),
        "brl_base": choice("bce", "bce", "focal", help="BRL: the head's BCE elsewhere, or the paper's focal loss"),
        "brl_region": choice("pred", "pred", "prior", help="BRL: confusion judged by decoded or fixed prior boxes"),
        "brl_gain": at_least(0.0, 0, "BRL focal base: gain on the focal term; 0 matches the first batch's BCE"),
        "fl_gamma": at_least(2.0, 0, "focal gamma used by BRL's focal base"),
        "fl_alpha": unit(0.25, False, False, "focal alpha used by BRL's focal base"),
    }
    SWITCH = "brl"

    def __init__(self, t: float, iou: float, weight: float, mode: str, gamma: float, alpha: float, base: str = "bce",
                 region: str = "pred", gain: float = 0.0, partial_empty: bool = False):
        self.t, self.iou, self.weight, self.mode, self.gamma, self.alpha = t, iou, weight, mode, gamma, alpha
        self.base, self.region, self.gain, self.partial_empty = base, region, gain, partial_empty

    @classmethod
    def from_args(cls, k: dict[str, Any]) -> BackgroundRecalibration | None:
        if not k["brl"]:
            return None
        return cls(k["brl_t"], k["brl_iou"], k["brl_weight"], k["brl_mode"], k["fl_gamma"], k["fl_alpha"],
                   k["brl_base"], k["brl_region"], k["brl_gain"], k["partial_empty"])

    def apply(self, t: Terms) -> None:
        """Replace the classification term by BRL's on confusion anchors (and by focal loss everywhere, base focal)."""
        relax = None if self.partial_empty else t.labelled().expand_as(t.a.fg_mask)
        if t.asserted is not None:  # a class the image labels exhaustively or verified absent is never relaxed
            relax = ~t.asserted if relax is None else relax[..., None] & ~t.asserted
        t.cls_elem, stats = self.loss(t.a.pred_scores, t.targets, t.region_iou(self.region), t.a.fg_mask, relax,
                                      t.cls_elem)
        t.stats.update(stats)

    def apply_objectness(self, t) -> None:
        """BRL on the objectness BCE: objectness is this head's background decision (class BCE sees only matches)."""
        p = t.p
        relax = None if self.partial_empty else t.labelled()
        iou = t.prior_iou() if self.region == "prior" else t.max_iou()
        obj, stats = self.loss(p.obj_logit[..., None], p.tobj[..., None], iou, p.matched,
                               None if relax is None else relax[..., None], t.obj_elem[..., None])
        t.obj_elem = obj[..., 0]
        t.stats.update(stats)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, iou: torch.Tensor, fg_mask: torch.Tensor,
        relax: torch.Tensor | None = None, bce: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the (B, A, C) element-wise loss and the batch's confusion and recalibrated anchor counts.

        Args:
            logits (torch.Tensor): (B, A, C) class logits.
            targets (torch.Tensor): (B, A, C) soft targets (zero on background anchors).
            iou (torch.Tensor): (B, A) best-GT IoU of each anchor's region (decoded or prior box).
            fg_mask (torch.Tensor): (B, A) foreground anchors.
            relax (torch.Tensor, optional): (B, A) or (B, A, C) bool, where recalibration may apply (default all).
            bce (torch.Tensor, optional): (B, A, C) the head's BCE elements, when already computed (base bce).
        """
        confusion = ~fg_mask & (iou < self.iou)  # (B, A)
        if relax is not None and relax.dim() == 2:
            confusion = confusion & relax
        conf = confusion[..., None]
        if relax is not None and relax.dim() == 3:  # per class: neither mirrored nor rescaled where not relaxed
            conf = conf & relax
        p = logits.sigmoid()
        recal = conf & (1.0 - p < self.t)
        if self.base == "focal":
            loss = sigmoid_focal(logits, targets, self.gamma, self.alpha)
            # -(1 - alpha) (1 - p)^gamma log(p): the positive branch, so the gradient raises p
            mirrored = (1 - self.alpha) * (1.0 - p).pow(self.gamma) * F.softplus(-logits)
        else:
            loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") if bce is None else bce
            mirrored = F.softplus(-logits)  # -log(p), the BCE positive term
        if self.mode == "zero":
            mirrored = torch.zeros_like(loss)
        loss = torch.where(recal, mirrored, loss)
        loss = torch.where(conf, loss * self.weight, loss)
        if self.base == "focal":
            loss = loss * self._focal_gain(logits, targets, loss)
        stats = {"brl_conf": confusion.sum().float(), "brl_recal": recal.any(-1).sum().float()}
        return loss, stats

    def _focal_gain(self, logits: torch.Tensor, targets: torch.Tensor, focal: torch.Tensor) -> float:
        """brl_gain, or (measured once, on the first batch) the BCE sum over the focal sum."""
        if self.gain <= 0:
            with torch.no_grad():
                bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum")
                self.gain = float(bce / focal.detach().float().sum().clamp(min=1e-12))
        return self.gain
