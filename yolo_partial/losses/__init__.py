"""Partial-label-aware detection losses: one loss (`partial.py`), one file per method (`bpr.py`, `brl.py`, `scb.py`,
`comining.py`), the registry that composes them (`registry.py`), and YOLOv5's loss for the objectness head.

Names are exported lazily (PEP 562), so that importing one method module, as yolo_partial.keys does through the
registry, does not pull in the losses that themselves read the key table.
"""

from importlib import import_module

_EXPORTS = {
    "BackgroundRecalibration": "brl",
    "BoxPredictionRebalancing": "bpr",
    "CoMining": "comining",
    "CoMiningLoss": "comining",
    "METHODS": "registry",
    "Method": "method",
    "ObjectnessDetectionLoss": "objectness",
    "PartialDetectionLoss": "partial",
    "ScaleBalance": "scb",
    "Terms": "method",
    "Assignment": "method",
    "add_jittered_view": "comining",
    "anchors_per_gt": "scb",
    "best_gt_iou": "geometry",
    "build_methods": "registry",
    "build_targets": "objectness",
    "color_jitter": "comining",
    "partial_criterion": "criterion",
    "pseudo_labels": "comining",
    "sigmoid_focal": "brl",
}

__all__ = tuple(sorted(_EXPORTS))


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
