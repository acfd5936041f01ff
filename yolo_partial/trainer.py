"""PartialDetectionTrainer: Ultralytics' DetectionTrainer with the fork's keys and the partial-label loss."""

from __future__ import annotations

from copy import copy
from typing import Any

from ultralytics.cfg import cfg2dict
from ultralytics.models import yolo
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.torch_utils import unwrap_model

from .data import check_dropped_labels, resolve_data
from .keys import FORK_DEFAULTS, FORK_KEYS, check_fork_args, coerce
from .losses import partial_criterion
from .offline import install_offline_guards


class PartialDetectionTrainer(DetectionTrainer):
    """Detection trainer whose criterion is PartialDetectionLoss, configured by the fork keys (yolo_partial.keys).

    The fork's defaults are merged into the base cfg here, so every construction path accepts fork keys: Python
    overrides, the CLI, and Ultralytics' DDP worker (which rebuilds the trainer from the plain default cfg plus the
    saved args). The model stays a stock DetectionModel, so checkpoints load in stock Ultralytics.

    Examples:
        >>> from ultralytics import YOLO
        >>> YOLO("yolov8n.yaml").train(trainer=PartialDetectionTrainer, data="data/shapes.yaml", drop_neg_obj=0.75)
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        install_offline_guards()
        overrides = dict(overrides or {})
        for k in FORK_KEYS.keys() & overrides.keys():
            overrides[k] = coerce(k, overrides[k])
        if not overrides.get("resume"):
            overrides["data"] = resolve_data(overrides.get("data"))
        super().__init__({**FORK_DEFAULTS, **cfg2dict(cfg)}, overrides, _callbacks)
        for k, v in check_fork_args(vars(self.args)).items():  # resume restores the args of the checkpoint
            setattr(self.args, k, v)

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        """Build the YOLO dataset, stopping with the file named if Ultralytics rejected any image or label file."""
        dataset = super().build_dataset(img_path, mode, batch)
        check_dropped_labels(dataset)
        return dataset

    def get_validator(self):
        """Return a DetectionValidator given only Ultralytics' own keys (its cfg check rejects others)."""
        args = copy(self.args)
        for k in FORK_KEYS:
            delattr(args, k)
        return yolo.detect.DetectionValidator(self.test_loader, save_dir=self.save_dir, args=args, _callbacks=self.callbacks)

    def set_class_weights(self):
        """Set class weights, then install the partial criterion before the EMA copy is made so both carry it."""
        super().set_class_weights()
        self._install_criterion()

    def resume_training(self, ckpt):
        """Resume, then replace the stock criterion that Ultralytics rebuilds for end-to-end heads."""
        super().resume_training(ckpt)
        if ckpt is not None and self.resume:
            updates = getattr(unwrap_model(self.model).criterion, "updates", None)
            self._install_criterion()
            if updates is not None:  # E2ELoss's one-to-many/one-to-one schedule continues where it stopped
                crit = unwrap_model(self.model).criterion
                crit.updates = updates - 1
                crit.update()

    def _install_criterion(self):
        model = unwrap_model(self.model)
        model.criterion = partial_criterion(model)
        if self.ema:
            self.ema.ema.criterion = partial_criterion(self.ema.ema)



