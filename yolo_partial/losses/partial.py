"""One detection loss for partially labelled data: stock v8DetectionLoss, shaped by the registered methods.

The shared quantities (assignment, decoded boxes, each prediction's best-GT IoU) are computed once; each method turns
them into masks, weights or replaced terms (see losses.method). With every method key at its default the result is
exactly Ultralytics' loss.
"""

from __future__ import annotations

from typing import Any

import torch
from ultralytics.utils.loss import v8DetectionLoss
from ultralytics.utils.tal import make_anchors

from ..keys import method_args
from .method import Assignment, Terms, find_method
from .registry import build_methods


class PartialDetectionLoss(v8DetectionLoss):
    """Ultralytics' detection loss with the partial-label methods read from `model.args` (see yolo_partial.keys).

    Called as `loss(preds, batch)` and returns `(loss_vec * batch_size, items)` like v8DetectionLoss; `items` holds the
    three loss terms followed by the enabled methods' per-batch counts (names without 'loss', kept out of loss plots).
    """

    def __init__(self, model: torch.nn.Module, tal_topk: int = 10, tal_topk2: int | None = None):
        super().__init__(model, tal_topk=tal_topk, tal_topk2=tal_topk2)
        self.methods = build_methods(method_args(model.args))

    def method(self, name: str):
        """The enabled method called `name` (e.g. 'bpr'), or None when it is off."""
        return find_method(self.methods, name)

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
        """Same contract as v8DetectionLoss.get_assigned_targets_and_loss, with the methods applied."""
        a = self.assign(preds, batch, **assign_kwargs)
        targets = a.target_scores.to(a.pred_scores.dtype)
        t = Terms(a, self.bce(a.pred_scores, targets), targets, a.fg_mask, a.target_scores)  # (B, A, C) stock BCE
        t.batch = batch  # what the methods may read of the batch (class-partial masks)
        for m in self.methods:
            m.apply(t)
        cls_elem = t.classification()
        cls_elem = cls_elem if self.class_weights is None else cls_elem * self.class_weights

        loss = torch.zeros(3, device=self.device)
        loss[1] = cls_elem.sum() / a.target_scores_sum
        loss[0], loss[2] = self.bbox_loss(
            a.pred_distri, a.pred_bboxes, a.anchor_points, a.target_bboxes / a.stride_tensor, t.box_scores,
            a.target_scores_sum, t.box_fg, a.imgsz, a.stride_tensor,
        )  # fmt: skip
        loss[0] *= self.hyp.box
        loss[1] *= self.hyp.cls
        loss[2] *= self.hyp.dfl
        items = {**dict(zip(self.loss_names, loss.detach())), **{k: v.detach() for k, v in t.stats.items()}}
        return (a.fg_mask, a.target_gt_idx, a.target_bboxes, a.anchor_points, a.stride_tensor), loss, items

