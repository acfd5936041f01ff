"""Geometry and output parsing shared by the losses and the methods (no method logic here)."""

from __future__ import annotations

from typing import Any

import torch


def train_outputs(preds: Any) -> Any:
    """The head's training outputs from what a model returns: in eval mode Ultralytics heads return (inference, train)."""
    return preds[1] if isinstance(preds, tuple) else preds


@torch.no_grad()
def best_gt_iou(boxes: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(B, A) max IoU of (B, A, 4) xyxy boxes against the valid rows of (B, N, 4) xyxy GTs marked by (B, N, 1) mask."""
    b, a, _ = boxes.shape
    if gt_bboxes.shape[1] == 0:
        return boxes.new_zeros(b, a)
    gt = gt_bboxes.to(boxes.dtype)
    wh = (torch.minimum(boxes[:, :, None, 2:], gt[:, None, :, 2:]) - torch.maximum(boxes[:, :, None, :2], gt[:, None, :, :2]))
    inter = wh.clamp_(min=0).prod(-1)  # (B, A, N)
    area_p = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)  # (B, A)
    area_g = (gt[..., 2:] - gt[..., :2]).clamp(min=0).prod(-1)  # (B, N)
    iou = inter.div_(area_p[:, :, None] + area_g[:, None, :] - inter + eps)
    return iou.masked_fill_(~mask_gt.bool().view(b, 1, -1), 0.0).amax(-1)
