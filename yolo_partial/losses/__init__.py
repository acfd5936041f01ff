"""Partial-label-aware detection losses: one loss, small policies (BPR, BRL, SCB), and the Co-mining wrapper."""

from .bpr import BoxPredictionRebalancing
from .brl import BackgroundRecalibration, sigmoid_focal
from .comining import CoMiningLoss, add_jittered_view, color_jitter, pseudo_labels
from .partial import PartialDetectionLoss, best_gt_iou, partial_criterion
from .scb import ScaleBalance, anchors_per_gt

__all__ = (
    "BackgroundRecalibration",
    "BoxPredictionRebalancing",
    "CoMiningLoss",
    "PartialDetectionLoss",
    "ScaleBalance",
    "add_jittered_view",
    "anchors_per_gt",
    "best_gt_iou",
    "color_jitter",
    "partial_criterion",
    "pseudo_labels",
    "sigmoid_focal",
)
