"""Partial-label-aware detection losses: one loss, small policies (BPR, BRL, SCB)."""

from .bpr import BoxPredictionRebalancing
from .brl import BackgroundRecalibration, sigmoid_focal
from .partial import PartialDetectionLoss, best_gt_iou, partial_criterion
from .scb import ScaleBalance, anchors_per_gt

__all__ = (
    "BackgroundRecalibration",
    "BoxPredictionRebalancing",
    "PartialDetectionLoss",
    "ScaleBalance",
    "anchors_per_gt",
    "best_gt_iou",
    "partial_criterion",
    "sigmoid_focal",
)
