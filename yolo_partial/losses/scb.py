"""Scale-balanced loss (Shuang et al., Pattern Recognition 2021): re-weight each GT by how many anchors it was matched to.

A GT matched to M_i anchors gets W_i = beta (ln M_i + alpha) / M_i on its anchors' positive terms, so an object's total
weight grows like log M_i instead of M_i and small objects (few anchors) are not drowned out by large ones.
"""

from __future__ import annotations

import torch


def anchors_per_gt(fg_mask: torch.Tensor, target_gt_idx: torch.Tensor, n_gt: int) -> torch.Tensor:
    """M_i: (B, N) number of foreground anchors assigned to each GT, from (B, A) fg_mask and target_gt_idx."""
    counts = torch.zeros(fg_mask.shape[0], n_gt, device=fg_mask.device)
    return counts.scatter_add_(1, target_gt_idx, fg_mask.float())


class ScaleBalance:
    """Per-anchor weights W_i of the scale-balanced loss.

    Args:
        alpha (float): Offset keeping single-anchor objects' weight above zero.
        beta (float): Overall gain on positive terms.
        box (bool): Also weight the box terms (the reference weights classification only).
    """

    def __init__(self, alpha: float, beta: float, box: bool):
        self.alpha, self.beta, self.box = alpha, beta, box

    def anchor_weights(self, fg_mask: torch.Tensor, target_gt_idx: torch.Tensor, n_gt: int) -> torch.Tensor:
        """(B, A) weight of each anchor: W_i of its GT on foreground anchors, 1 on background anchors."""
        if n_gt == 0:  # no GT in the batch: no foreground to weight
            return torch.ones(fg_mask.shape, device=fg_mask.device)
        m = anchors_per_gt(fg_mask, target_gt_idx, n_gt)
        w_gt = torch.where(m > 0, self.beta * (m.clamp(min=1).log() + self.alpha) / m.clamp(min=1), 0.0)
        return torch.where(fg_mask, w_gt.gather(1, target_gt_idx), 1.0)
