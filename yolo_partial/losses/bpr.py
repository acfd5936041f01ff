"""Box Prediction Rebalancing (Haque & McEver, 2022): drop negative predictions from the box and objectness terms.

A prediction is negative when its decoded box overlaps every GT of its image by less than `neg_iou` (Faster R-CNN's
negative threshold, as in the paper). Partial labels make many such "negatives" unlabelled objects, so a fraction of
them is left out of the loss, re-drawn every batch.
"""

from __future__ import annotations

import torch


class BoxPredictionRebalancing:
    """Choose which negative anchors are removed from the box terms and from the background classification term.

    Args:
        drop_box (float): Fraction of negative foreground anchors removed from the box (CIoU + DFL/L1) terms.
        drop_obj (float): Fraction of negative background anchors removed from the classification (objectness) term.
        mode (str): 'random' (the paper) or 'score' (drop the highest-scoring negatives first).
        neg_iou (float): IoU below which a prediction is negative.
    """

    def __init__(self, drop_box: float, drop_obj: float, mode: str, neg_iou: float):
        self.drop_box, self.drop_obj, self.mode, self.neg_iou = drop_box, drop_obj, mode, neg_iou

    @property
    def enabled(self) -> bool:
        return self.drop_box > 0 or self.drop_obj > 0

    def drop_masks(
        self, max_iou: torch.Tensor, fg_mask: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (box_drop, obj_drop), boolean (B, A) masks of the anchors removed from each term.

        Args:
            max_iou (torch.Tensor): (B, A) IoU of each decoded prediction with the best GT of its image.
            fg_mask (torch.Tensor): (B, A) anchors the assigner made foreground.
            scores (torch.Tensor): (B, A) detached best class probability, the ranking used by mode='score'.
        """
        negative = max_iou < self.neg_iou
        box_drop = self._choose(fg_mask & negative, self.drop_box, scores)
        obj_drop = self._choose(~fg_mask & negative, self.drop_obj, scores)
        return box_drop, obj_drop

    def _choose(self, candidates: torch.Tensor, fraction: float, scores: torch.Tensor) -> torch.Tensor:
        """Mark round(fraction * n) of the n candidate anchors of the whole batch, at random or by highest score."""
        drop = torch.zeros_like(candidates)
        if fraction <= 0:
            return drop
        idx = candidates.flatten().nonzero().squeeze(1)
        k = int(fraction * idx.numel() + 0.5)
        if k == 0:
            return drop
        if self.mode == "score":
            pick = idx[scores.flatten()[idx].topk(k).indices]
        else:
            pick = idx[torch.randperm(idx.numel(), device=idx.device)[:k]]
        return drop.view(-1).index_fill_(0, pick, True).view_as(candidates)
