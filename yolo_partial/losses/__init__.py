"""Partial-label-aware detection losses: one loss, small policies (BPR, BRL, SCB), the Co-mining wrapper, and YOLOv5's
loss for the objectness head."""

from .bpr import BoxPredictionRebalancing
from .brl import BackgroundRecalibration, sigmoid_focal
from .comining import CoMiningLoss, add_jittered_view, color_jitter, pseudo_labels
from .objectness import ObjectnessDetectionLoss, build_targets
from .partial import PartialDetectionLoss, best_gt_iou, partial_criterion
from .scb import ScaleBalance, anchors_per_gt

__all__ = (
    "BackgroundRecalibration",
    "BoxPredictionRebalancing",
    "CoMiningLoss",
    "ObjectnessDetectionLoss",
    "PartialDetectionLoss",
    "ScaleBalance",
    "add_jittered_view",
    "anchors_per_gt",
    "best_gt_iou",
    "build_targets",
    "color_jitter",
    "partial_criterion",
    "pseudo_labels",
    "sigmoid_focal",
)
