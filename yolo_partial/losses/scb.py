"""Scale-balanced loss (Shuang et al., Pattern Recognition 2021): re-weight each GT by how many anchors it was matched to.

A GT matched to M_i anchors gets W_i = beta (ln M_i + alpha) / M_i on its anchors' positive terms, so an object's total
weight grows like log M_i instead of M_i and small objects (few anchors) are not drowned out by large ones.

Ultralytics' task-aligned assigner keeps at most top-k (10) anchors per GT, so the assigned count M_i stops growing with
the object's size past ~24 px (and is 1 on YOLO26's one-to-one branch): `scb_count=assigned` is the reference's count
as the assigner gives it; `scb_count=inside` counts the anchor points whose centre lies inside GT i (the assigner's
candidates before top-k, at least 1), which grows with the object's area as SSD's matches do, and is the same on both
YOLO26 branches. On the YOLOv5 objectness head M_i is its matches (up to 3 anchors x 3 cells per level).
"""

from __future__ import annotations

from typing import Any

import torch

from ..keyspec import at_least, choice, flag
from .method import Method, Terms


def anchors_per_gt(fg_mask: torch.Tensor, target_gt_idx: torch.Tensor, n_gt: int) -> torch.Tensor:
    """M_i: (B, N) number of foreground anchors assigned to each GT, from (B, A) fg_mask and target_gt_idx."""
    counts = torch.zeros(fg_mask.shape[0], n_gt, device=fg_mask.device)
    return counts.scatter_add_(1, target_gt_idx, fg_mask.float())


def anchors_inside_gt(points: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor) -> torch.Tensor:
    """(B, N) number of (A, 2) anchor points (pixels) strictly inside each (B, N, 4) xyxy GT (0 for padding rows)."""
    x, y = points[:, 0], points[:, 1]  # (A,)
    g = gt_bboxes[..., None]  # (B, N, 4, 1)
    inside = (x > g[:, :, 0]) & (x < g[:, :, 2]) & (y > g[:, :, 1]) & (y < g[:, :, 3])  # (B, N, A)
    return inside.sum(-1).float() * mask_gt[..., 0].float()


class ScaleBalance(Method):
    """Per-anchor weights W_i of the scale-balanced loss.

    Args:
        alpha (float): Offset keeping single-anchor objects' weight above zero.
        beta (float): Overall gain on positive terms.
        box (bool): Also weight the box terms (the reference weights classification only).
    """

    KEYS = {
        "scb": flag("scale-balanced loss: W_i = beta (ln M_i + alpha) / M_i on GT i's anchors"),
        "scb_alpha": at_least(1.0, 0, "SCB: alpha"),
        "scb_beta": at_least(3.0, 0, "SCB: beta", strict=True),
        "scb_box": flag("SCB: weight the box terms too (the reference weights classification only)"),
        "scb_count": choice("assigned", "assigned", "inside",
                            help="SCB: M_i = anchors assigned to GT i, or anchor points inside it (grows with area)"),
    }
    NAME = "scb"
    SWITCH = "scb"

    def __init__(self, alpha: float, beta: float, box: bool, count: str = "assigned"):
        self.alpha, self.beta, self.box, self.count = alpha, beta, box, count

    @classmethod
    def from_args(cls, k: dict[str, Any]) -> ScaleBalance | None:
        return cls(k["scb_alpha"], k["scb_beta"], k["scb_box"], k["scb_count"]) if k["scb"] else None

    def apply(self, t: Terms) -> None:
        """W_i scales the whole classification term of GT i's anchors (the per-object loss of the reference)."""
        a = t.a
        counts = anchors_inside_gt(a.anchor_points * a.stride_tensor, a.gt_bboxes, a.mask_gt) if self.count == "inside" else None
        w = self.anchor_weights(a.fg_mask, a.target_gt_idx, a.gt_bboxes.shape[1], counts)
        t.cls_elem = t.cls_elem * w[..., None]
        if self.box:
            t.box_scores = t.box_scores * w[..., None]

    def apply_objectness(self, t) -> None:
        """W_i on each match's class term (and box term with scb_box), and on the objectness term of the cells whose
        target GT i set (ties: the larger weight)."""
        p = t.p
        w = self.anchor_weights(torch.ones_like(p.gt, dtype=torch.bool)[None], p.gt[None], t.n_gt)[0]
        setter = p.iou.detach().clamp(0) == p.tobj.view(-1)[p.flat]
        w_cell = torch.ones_like(p.tobj).view(-1).index_fill_(0, p.flat, 0.0)
        w_cell.scatter_reduce_(0, p.flat[setter], w[setter], "amax")
        t.obj_elem = t.obj_elem * w_cell.view_as(t.obj_elem)
        t.cls_elem = t.cls_elem * w[:, None]
        if self.box:
            t.box_elem = t.box_elem * w

    def anchor_weights(self, fg_mask: torch.Tensor, target_gt_idx: torch.Tensor, n_gt: int,
                       counts: torch.Tensor | None = None) -> torch.Tensor:
        """(B, A) weight of each anchor: W_i of its GT on foreground anchors, 1 on background anchors.

        `counts` (B, N) replaces the assigned count M_i (scb_count=inside); a GT with assigned anchors counts >= 1.
        """
        if n_gt == 0:  # no GT in the batch: no foreground to weight
            return torch.ones(fg_mask.shape, device=fg_mask.device)
        m = anchors_per_gt(fg_mask, target_gt_idx, n_gt)
        if counts is not None:
            m = torch.where(m > 0, counts.to(m.dtype).clamp(min=1), m)
        w_gt = torch.where(m > 0, self.beta * (m.clamp(min=1).log() + self.alpha) / m.clamp(min=1), 0.0)
        return torch.where(fg_mask, w_gt.gather(1, target_gt_idx), 1.0)
