"""The criterion a model trains with: its head's loss (anchor-free or YOLOv5 objectness), E2E-wrapped for YOLO26, then
wrapped by the methods that wrap (Co-mining)."""

from __future__ import annotations

import torch
from ultralytics.utils.loss import E2ELoss

from ..keys import method_args
from ..models import ObjectnessDetect
from .objectness import ObjectnessDetectionLoss
from .partial import PartialDetectionLoss
from .registry import build_methods


def partial_criterion(model: torch.nn.Module, hidden: bool = False):
    """The partial loss for `model`'s head: E2ELoss around it for end-to-end heads (YOLO26), else the loss itself,
    then wrapped by every enabled method's `wrap`.

    Args:
        model: A DetectionModel whose `args` hold the method keys.
        hidden (bool): The training batches carry a hidden-box manifest's boxes (the trainer decides; losses never
            read files), so methods may log how many of their pseudo boxes find them.
    """
    if isinstance(model.model[-1], ObjectnessDetect):  # YOLOv5's anchor-based head has its own loss
        return ObjectnessDetectionLoss(model)
    if getattr(model.model[-1], "one2one_cv2", None) is not None:
        crit = E2ELoss(model, loss_fn=PartialDetectionLoss)
    else:
        crit = PartialDetectionLoss(model)
    for m in build_methods(method_args(model.args)):
        crit = m.wrap(crit, {"hidden": hidden})
    return crit
