"""Background Recalibration Loss (Zhang et al., ICASSP 2020) on the classification term.

Positives and ordinary negatives get sigmoid focal loss. On *confusion* anchors (background anchors whose decoded box
overlaps every GT by less than `brl_iou`, where unlabelled objects hide) each class's negative focal branch is
replaced by the mirrored positive branch once the model is confident (p > 1 - t), so the model may trust itself over
the missing label; the confusion term is scaled by `brl_weight`.
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
        t (float): Recalibration threshold; t=0 leaves the focal negative branch everywhere.
        iou (float): Confusion region: best-GT IoU of the prediction below this.
        weight (float): Scale of the confusion anchors' loss.
        mode (str): 'mirror' (BRL) or 'zero' (BRL-minus: the recalibrated part contributes nothing).
        gamma (float): Focal gamma.
        alpha (float): Focal alpha.
    """

    KEYS = {
        "brl": flag("Background Recalibration Loss on the classification (objectness) term"),
        "brl_t": unit(0.5, False, True, "BRL: confident confusion anchors (p > 1 - t) get the mirrored term"),
        "brl_iou": unit(0.1, True, True, "BRL: confusion region, IoU with every GT below this"),
        "brl_weight": at_least(0.1, 0, "BRL: scale of the confusion anchors' loss"),
        "brl_mode": choice("mirror", "mirror", "zero", help="BRL: mirrored term, or nothing (the paper's BRL-minus)"),
        "fl_gamma": at_least(2.0, 0, "focal gamma used by BRL"),
        "fl_alpha": unit(0.25, False, False, "focal alpha used by BRL"),
    }
    NAME = "brl"
    SWITCH = "brl"

    def __init__(self, t: float, iou: float, weight: float, mode: str, gamma: float, alpha: float):
        self.t, self.iou, self.weight, self.mode, self.gamma, self.alpha = t, iou, weight, mode, gamma, alpha

    @classmethod
    def from_args(cls, k: dict[str, Any]) -> BackgroundRecalibration | None:
        if not k["brl"]:
            return None
        return cls(k["brl_t"], k["brl_iou"], k["brl_weight"], k["brl_mode"], k["fl_gamma"], k["fl_alpha"])

    def apply(self, t: Terms) -> None:
        """Replace the classification term by BRL's, confusion anchors judged by the predicted boxes."""
        t.cls_elem, stats = self.loss(t.a.pred_scores, t.targets, t.max_iou(), t.a.fg_mask)
        t.stats.update(stats)

    def apply_objectness(self, t) -> None:
        """BRL on the objectness BCE: objectness is this head's background decision (class BCE sees only matches)."""
        p = t.p
        obj, stats = self.loss(p.obj_logit[..., None], p.tobj[..., None], t.max_iou(), p.matched)
        t.obj_elem = obj[..., 0]
        t.stats.update(stats)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, max_iou: torch.Tensor, fg_mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the (B, A, C) element-wise loss and the batch's confusion and recalibrated anchor counts.

        Args:
            logits (torch.Tensor): (B, A, C) class logits.
            targets (torch.Tensor): (B, A, C) soft targets (zero on background anchors).
            max_iou (torch.Tensor): (B, A) best-GT IoU of each decoded prediction.
            fg_mask (torch.Tensor): (B, A) foreground anchors.
        """
        loss = sigmoid_focal(logits, targets, self.gamma, self.alpha)
        confusion = ~fg_mask & (max_iou < self.iou)
        p = logits.sigmoid()
        recal = confusion[..., None] & (1.0 - p < self.t)
        if self.mode == "mirror":
            # -(1 - alpha) (1 - p)^gamma log(p): the positive branch, so the gradient raises p
            mirrored = (1 - self.alpha) * (1.0 - p).pow(self.gamma) * F.softplus(-logits)
        else:
            mirrored = torch.zeros_like(loss)
        loss = torch.where(recal, mirrored, loss)
        loss = torch.where(confusion[..., None], loss * self.weight, loss)
        stats = {"brl_conf": confusion.sum().float(), "brl_recal": recal.any(-1).sum().float()}
        return loss, stats
