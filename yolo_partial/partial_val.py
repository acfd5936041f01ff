"""Validation with the partial-aware mAP beside Ultralytics' own, for datasets whose `partial:` file lists val images.

`PartialDetectionValidator` is Ultralytics' DetectionValidator, unchanged, plus a second count of the same detections
with yolo_partial.partial_eval's two rules (LVIS' federated classes, COCO's crowd rule for ignore boxes, on Ultralytics'
own matcher and `ap_per_class`): `metrics/partial_mAP50(B)` and `metrics/partial_mAP50-95(B)` in results.csv and in
the printed table (the two `Fed(...)` columns, per class too), and `fitness`, by which Ultralytics picks best.pt,
becomes the partial-aware mAP50-95 (Ultralytics' own fitness is its mAP50-95). Matching is made in the letterboxed frame
the validator matches in; each image's ignore boxes are placed there by the inverse of the transform Ultralytics uses
to map predictions back to the original image (ratio_pad).

The trainer uses it when `partial_eval=True` (the default) and the data's `partial:` file lists at least one val image;
`yolo-partial val` always does, deciding from the data YAML (a dataset without `partial:` gets Ultralytics' output).
"""

from __future__ import annotations

from functools import partial as bind
from typing import Any

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils import LOGGER, RANK
from ultralytics.utils.metrics import DetMetrics
from ultralytics.utils.ops import xywh2xyxy, xyxy2xywh

from .partial_eval import federated_map, image_stats
from .partial_labels import ImagePartial, PartialLabels, partial_for_data

PARTIAL_MAP_KEYS = ("metrics/partial_mAP50(B)", "metrics/partial_mAP50-95(B)")


class PartialDetMetrics(DetMetrics):
    """DetMetrics with the partial-aware mAP50 and mAP50-95 appended to its keys, means and per-class results, and as
    its fitness, when `enabled`; exactly DetMetrics otherwise."""

    def __init__(self, names: dict[int, str] | None = None):
        super().__init__(names)
        self.enabled = False
        self.partial: dict[str, Any] | None = None  # partial_eval.federated_map's result of the last run

    @property
    def keys(self) -> list[str]:
        return [*super().keys, *PARTIAL_MAP_KEYS] if self.enabled else super().keys

    def mean_results(self) -> list[float]:
        base = list(super().mean_results())
        if not self.enabled:
            return base
        p = self.partial or {}
        return [*base, p.get("map50", 0.0), p.get("map", 0.0)]

    def class_result(self, i: int) -> tuple:
        base = tuple(super().class_result(i))
        if not self.enabled:
            return base
        c = (self.partial or {}).get("per_class", {}).get(int(self.ap_class_index[i]), {})
        return (*base, c.get("ap50", 0.0), c.get("ap", 0.0))

    @property
    def fitness(self) -> float:
        """The partial-aware mAP50-95 (Ultralytics' fitness weights mAP50-95 alone) when enabled."""
        return float((self.partial or {}).get("map", 0.0)) if self.enabled else super().fitness


def ignore_in_frame(entry: ImagePartial | None, ori_shape, ratio_pad, imgsz) -> ImagePartial | None:
    """The entry with its ignore boxes (normalised to the original image) normalised to the letterboxed val frame."""
    if entry is None or not len(entry.ignore):
        return entry
    (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
    h0, w0 = ori_shape[:2]
    h, w = imgsz[:2]
    xyxy = xywh2xyxy(entry.ignore.astype(np.float64)) * np.array([w0, h0, w0, h0], np.float64)
    xyxy = xyxy * np.array([gain_w, gain_h, gain_w, gain_h]) + np.array([pad_w, pad_h, pad_w, pad_h], np.float64)
    return ImagePartial(entry.labeled, entry.negative, xyxy2xywh(xyxy / np.array([w, h, w, h], np.float64)))


class PartialDetectionValidator(DetectionValidator):
    """DetectionValidator that also counts the partial-aware mAP (see the module docstring).

    Args:
        partial (PartialLabels, optional): The data's partial: file; None loads it from the data YAML.
        enabled (bool, optional): Whether to count it; None decides on the first run (partial_eval and the file lists
            val images). The trainer decides up front, since it reads `metrics.keys` before the first run.
        partial_eval (bool): False leaves Ultralytics' validation alone.
    """

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks=None, partial: PartialLabels | None = None,
                 enabled: bool | None = None, partial_eval: bool = True):
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.partial, self.partial_eval, self._decided = partial, partial_eval, enabled is not None
        self.metrics = PartialDetMetrics()
        self.metrics.enabled = bool(enabled)
        self.partial_stats: list[dict[str, np.ndarray]] = []

    def init_metrics(self, model: torch.nn.Module) -> None:
        super().init_metrics(model)
        if not self._decided:
            self._decided = True
            if self.partial_eval and not self.args.single_cls:
                if self.partial is None:
                    self.partial = partial_for_data(self.data.get("yaml_file") or self.args.data)
                im_files = self.dataloader.dataset.im_files
                self.metrics.enabled = self.partial is not None and self.partial.lists(im_files)
        self.partial_stats = []

    def get_desc(self) -> str:
        if not self.metrics.enabled:
            return super().get_desc()
        return super().get_desc() + ("%11s" * 2) % ("Fed(mAP50", "mAP50-95)")

    def update_metrics(self, preds: list[dict[str, torch.Tensor]], batch: dict[str, Any]) -> None:
        """Ultralytics' update, then each image's detections counted by the partial-aware rules."""
        super().update_metrics(preds, batch)
        if not self.metrics.enabled:
            return
        for si, pred in enumerate(preds):
            pb = self._prepare_batch(si, batch)
            entry = ignore_in_frame(self.partial.for_image(pb["im_file"]), pb["ori_shape"], pb["ratio_pad"],
                                    tuple(pb["imgsz"]))
            self.partial_stats.append(image_stats(
                pred["bboxes"].detach().cpu().numpy(), pred["conf"].detach().cpu().numpy(),
                pred["cls"].detach().cpu().numpy(), pb["bboxes"].cpu().numpy(), pb["cls"].cpu().numpy(), entry,
                tuple(pb["imgsz"])))  # fmt: skip

    def gather_stats(self) -> None:
        super().gather_stats()
        if RANK == -1 or not self.metrics.enabled:
            return
        import torch.distributed as dist

        gathered = [None] * dist.get_world_size() if RANK == 0 else None
        dist.gather_object(self.partial_stats, gathered, dst=0)
        self.partial_stats = [s for part in gathered for s in part] if RANK == 0 else []

    def get_stats(self) -> dict[str, Any]:
        if self.metrics.enabled:
            self.metrics.partial = federated_map(self.partial_stats)
        return super().get_stats()

    def print_results(self) -> None:
        super().print_results()
        p = self.metrics.partial if self.metrics.enabled else None
        if p is not None:
            LOGGER.info(f"Partial-aware mAP50 {p['map50']:.3g}, mAP50-95 {p['map']:.3g} ({self.partial.path.name}: "
                        f"federated classes and ignore boxes; {p['ignored']} of {p['detections']} detections not "
                        f"counted at IoU 0.5)")


def validator_for(trainer: Any, args: Any) -> DetectionValidator:
    """The trainer's validator: partial-aware when `partial_eval` is on and the data's partial: file lists val images."""
    partial = getattr(trainer, "partial_labels", None)
    on = (bool(getattr(trainer.args, "partial_eval", True)) and partial is not None and not args.single_cls
          and partial.lists(trainer.test_loader.dataset.im_files))
    kw = dict(save_dir=trainer.save_dir, args=args, _callbacks=trainer.callbacks)
    if not on:
        return DetectionValidator(trainer.test_loader, **kw)
    return PartialDetectionValidator(trainer.test_loader, partial=partial, enabled=True, **kw)


def partial_validator(partial_eval: bool = True):
    """The validator class for `YOLO(...).val(validator=...)`, deciding from the data YAML on its first run."""
    return bind(PartialDetectionValidator, partial_eval=partial_eval)
