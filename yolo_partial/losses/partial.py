"""One detection loss for partially labelled data: stock v8DetectionLoss plus small policies (BPR, BRL, SCB).

The shared quantities (assignment, decoded boxes, each prediction's best-GT IoU) are computed once; each policy turns
them into masks or weights. With every fork key at its default the result is exactly Ultralytics' loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from ultralytics.utils.loss import E2ELoss, v8DetectionLoss
from ultralytics.utils.tal import make_anchors

from ..hidden_labels import manifest_path
from ..keys import fork_args
from ..models import ObjectnessDetect
from .bpr import BoxPredictionRebalancing
from .brl import BackgroundRecalibration
from .comining import CoMiningLoss
from .scb import ScaleBalance


@dataclass
class Assignment:
    """What the assigner and decoder produce for one batch; shapes B images, A anchors, C classes, N max GTs."""

    pred_distri: torch.Tensor  # (B, A, 4 * reg_max) raw box distribution
    pred_scores: torch.Tensor  # (B, A, C) class logits
    pred_bboxes: torch.Tensor  # (B, A, 4) decoded xyxy, grid units
    anchor_points: torch.Tensor  # (A, 2) grid units
    stride_tensor: torch.Tensor  # (A, 1)
    imgsz: torch.Tensor  # (2,) h, w in pixels
    gt_bboxes: torch.Tensor  # (B, N, 4) xyxy pixels
    mask_gt: torch.Tensor  # (B, N, 1)
    target_bboxes: torch.Tensor  # (B, A, 4) xyxy pixels
    target_scores: torch.Tensor  # (B, A, C) soft IoU-aware targets
    target_scores_sum: torch.Tensor  # () positive normaliser
    fg_mask: torch.Tensor  # (B, A) bool
    target_gt_idx: torch.Tensor  # (B, A) index of the assigned GT

    def max_iou(self) -> torch.Tensor:
        """(B, A) IoU of each decoded prediction (pixels) with the best GT of its image, 0 for images without GT."""
        return best_gt_iou(self.pred_bboxes.detach() * self.stride_tensor, self.gt_bboxes, self.mask_gt)


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


class PartialDetectionLoss(v8DetectionLoss):
    """Ultralytics' detection loss with partial-label policies read from `model.args` (see yolo_partial.keys).

    Called as `loss(preds, batch)` and returns `(loss_vec * batch_size, items)` like v8DetectionLoss; `items` holds the
    three loss terms followed by the enabled policies' per-batch counts (names without 'loss', kept out of loss plots).
    """

    def __init__(self, model: torch.nn.Module, tal_topk: int = 10, tal_topk2: int | None = None):
        super().__init__(model, tal_topk=tal_topk, tal_topk2=tal_topk2)
        k = fork_args(model.args)
        bpr = BoxPredictionRebalancing(k["drop_neg_box"], k["drop_neg_obj"], k["drop_mode"], k["neg_iou"])
        self.bpr = bpr if bpr.enabled else None
        self.brl = (
            BackgroundRecalibration(k["brl_t"], k["brl_iou"], k["brl_weight"], k["brl_mode"], k["fl_gamma"], k["fl_alpha"])
            if k["brl"]
            else None
        )
        self.scb = ScaleBalance(k["scb_alpha"], k["scb_beta"], k["scb_box"]) if k["scb"] else None

    def assign(self, preds: dict[str, torch.Tensor], batch: dict[str, Any], **assign_kwargs) -> Assignment:
        """Decode predictions and run the task-aligned assigner, exactly as v8DetectionLoss does."""
        pred_distri = preds["boxes"].permute(0, 2, 1).contiguous()
        pred_scores = preds["scores"].permute(0, 2, 1).contiguous()
        anchor_points, stride_tensor = make_anchors(preds["feats"], self.stride, 0.5)
        dtype, batch_size = pred_scores.dtype, pred_scores.shape[0]
        imgsz = torch.tensor(preds["feats"][0].shape[2:], device=self.device, dtype=dtype) * self.stride[0]

        targets = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"]), 1)
        targets = self.preprocess(targets.to(self.device), batch_size, scale_tensor=imgsz[[1, 0, 1, 0]])
        gt_labels, gt_bboxes = targets.split((1, 4), 2)
        mask_gt = gt_bboxes.sum(2, keepdim=True).gt_(0.0)
        pred_bboxes = self.bbox_decode(anchor_points, pred_distri)

        _, target_bboxes, target_scores, fg_mask, target_gt_idx = self.assigner(
            pred_scores.detach().sigmoid(),
            (pred_bboxes.detach() * stride_tensor).type(gt_bboxes.dtype),
            anchor_points * stride_tensor,
            gt_labels,
            gt_bboxes,
            mask_gt,
            **assign_kwargs,
        )
        return Assignment(
            pred_distri, pred_scores, pred_bboxes, anchor_points, stride_tensor, imgsz, gt_bboxes, mask_gt,
            # without GT the assigner returns a float stub for the index
            target_bboxes, target_scores, target_scores.sum().clamp_(min=1), fg_mask, target_gt_idx.long(),
        )  # fmt: skip

    def get_assigned_targets_and_loss(self, preds: dict[str, torch.Tensor], batch: dict[str, Any], **assign_kwargs):
        """Same contract as v8DetectionLoss.get_assigned_targets_and_loss, with the policies applied."""
        a = self.assign(preds, batch, **assign_kwargs)
        loss = torch.zeros(3, device=self.device)
        stats: dict[str, torch.Tensor] = {}
        max_iou = a.max_iou() if (self.bpr or self.brl) else None
        targets = a.target_scores.to(a.pred_scores.dtype)

        if self.brl:
            cls_elem, brl_stats = self.brl.loss(a.pred_scores, targets, max_iou, a.fg_mask)
            stats.update(brl_stats)
        else:
            cls_elem = self.bce(a.pred_scores, targets)  # (B, A, C)
        if self.class_weights is not None:
            cls_elem *= self.class_weights

        box_fg, box_scores = a.fg_mask, a.target_scores
        if self.scb:
            # W_i scales the whole classification term of GT i's anchors (the per-object loss of the reference)
            w = self.scb.anchor_weights(a.fg_mask, a.target_gt_idx, a.gt_bboxes.shape[1])
            cls_elem = cls_elem * w[..., None]
            if self.scb.box:
                box_scores = a.target_scores * w[..., None]
        if self.bpr:
            scores = a.pred_scores.detach().amax(-1).sigmoid() if self.bpr.mode == "score" else None
            box_drop, obj_drop = self.bpr.drop_masks(max_iou, a.fg_mask, scores)
            cls_elem = cls_elem * (~obj_drop)[..., None]
            box_fg = a.fg_mask & ~box_drop
            stats.update(box_drop=box_drop.sum().float(), obj_drop=obj_drop.sum().float())

        loss[1] = cls_elem.sum() / a.target_scores_sum
        loss[0], loss[2] = self.bbox_loss(
            a.pred_distri, a.pred_bboxes, a.anchor_points, a.target_bboxes / a.stride_tensor, box_scores,
            a.target_scores_sum, box_fg, a.imgsz, a.stride_tensor,
        )  # fmt: skip
        loss[0] *= self.hyp.box
        loss[1] *= self.hyp.cls
        loss[2] *= self.hyp.dfl
        items = {**dict(zip(self.loss_names, loss.detach())), **{k: v.detach() for k, v in stats.items()}}
        return (a.fg_mask, a.target_gt_idx, a.target_bboxes, a.anchor_points, a.stride_tensor), loss, items


def partial_criterion(model: torch.nn.Module):
    """The partial loss for `model`'s head: E2ELoss around it for end-to-end heads (YOLO26), else the loss itself;
    wrapped in CoMiningLoss when `comining` is on (pseudo_hit logged when the data YAML names a hidden-box manifest)."""
    if isinstance(model.model[-1], ObjectnessDetect):  # YOLOv5's anchor-based head has its own loss
        from .objectness import ObjectnessDetectionLoss  # deferred: that module builds on best_gt_iou above

        return ObjectnessDetectionLoss(model)
    if getattr(model.model[-1], "one2one_cv2", None) is not None:
        base = E2ELoss(model, loss_fn=PartialDetectionLoss)
    else:
        base = PartialDetectionLoss(model)
    k = fork_args(model.args)
    if not k["comining"]:
        return base
    data = model.args.get("data") if isinstance(model.args, dict) else getattr(model.args, "data", None)
    return CoMiningLoss(base, k["cm_score"], k["cm_nms"], k["cm_gt_iou"], hidden=manifest_path(data) is not None)
