"""The composition point of the partial-label methods: what a method is, and the terms it may shape.

A method is one class in one file (one paper each), listed once in `yolo_partial.losses.registry.METHODS`. It
declares its keys (`KEYS`, all off by default), builds itself from the run's validated keys (`from_args`, None when
off) and acts through hooks; every hook has a neutral default, so a method implements only the ones it needs:

- `apply(t)`: shape the anchor-free loss's element-wise terms (`Terms`), after the stock terms are computed once;
- `apply_objectness(t)`: the same on the YOLOv5 objectness head's terms (`losses.objectness.ObjectnessTerms`);
  a method that cannot act there sets `OBJECTNESS = False` and is refused in one line;
- `wrap(criterion, context)`: wrap the whole criterion (Co-mining's two views);
- `preprocess_batch(batch, trainer)` and `setup_dataset(dataset, mode, trainer)`: trainer hooks;
- `epoch_end(trainer)`: trainer hook at the end of every training epoch, on every DDP rank, before validation, the
  results.csv row and the checkpoint (e.g. the teacher's threshold calibration, all-reduced there);
- `results_columns(metrics)`: extra non-loss results.csv columns for the epoch's row;
- `state_dict()` / `load_state_dict(state)`: plain-Python state the trainer saves in every checkpoint (under
  `CHECKPOINT_KEY`, by method NAME) and restores on resume and NaN recovery.

Methods are applied in registry order, which is why a method that replaces the classification term (BRL) comes before
those that weight (SCB) or mask (BPR) it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..keyspec import Key, flag
from .geometry import best_gt_iou

PRIOR_SCALE = 4.0  # a fixed prior box: a square of 4 x stride centred on the anchor point (RetinaNet's base anchor)
# keys several methods read; they belong to no single method
COMMON_KEYS = {
    "partial_empty": flag("treat images without any label as partially labelled: BRL and BPR relax them too (by "
                          "default an empty label file marks a verified background image)"),
}


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


@dataclass
class Terms:
    """The anchor-free loss's element-wise terms while the methods shape them (B images, A anchors, C classes).

    The loss sums them as Ultralytics does: classification `cls_elem.sum() / target_scores_sum`, box terms over
    `box_fg` weighted by `box_scores`.
    """

    a: Assignment
    cls_elem: torch.Tensor  # (B, A, C) classification loss of every anchor and class (BCE in the stock loss)
    targets: torch.Tensor  # (B, A, C) the classification targets, in the logits' dtype
    box_fg: torch.Tensor  # (B, A) bool, anchors in the box terms
    box_scores: torch.Tensor  # (B, A, C) box-term weights (their sum over C weights each anchor)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # per-batch counts, logged as non-loss items
    # (B, A, C) bool or None: the background term of class c at anchor a is known to be right (the image labels c
    # exhaustively there, or verified it absent). Methods that relax background terms (BRL, BPR, pseudo labels) leave
    # these alone. None: nothing is known, every class may be missing anywhere (random partial labels).
    asserted: torch.Tensor | None = None
    # (B, A, C) bool or None: background terms nobody asserts (class-partial labels, ignore regions, a teacher's
    # uncertain boxes), dropped by the loss after every method ran; positive terms are never dropped
    bg_ignore: torch.Tensor | None = None
    batch: dict[str, Any] = field(default_factory=dict)  # the loss's batch (e.g. class-partial masks, issue 17)
    _max_iou: torch.Tensor | None = None
    _prior_iou: torch.Tensor | None = None

    def max_iou(self) -> torch.Tensor:
        """(B, A) best-GT IoU of each anchor's decoded box, computed once per batch for every method that asks."""
        if self._max_iou is None:
            self._max_iou = self.a.max_iou()
        return self._max_iou

    def prior_iou(self) -> torch.Tensor:
        """(B, A) best-GT IoU of each anchor's fixed prior box (PRIOR_SCALE x stride square at its point): a region
        that training does not move, unlike the decoded box of a background anchor, which no loss trains."""
        if self._prior_iou is None:
            a = self.a
            half = a.stride_tensor * (PRIOR_SCALE / 2)  # (A, 1) pixels
            centre = a.anchor_points * a.stride_tensor  # (A, 2) pixels
            prior = torch.cat((centre - half, centre + half), 1)[None].expand(a.fg_mask.shape[0], -1, -1)
            self._prior_iou = best_gt_iou(prior, a.gt_bboxes, a.mask_gt)
        return self._prior_iou

    def region_iou(self, region: str) -> torch.Tensor:
        """(B, A) best-GT IoU of the region a method judges an anchor by: 'pred' (its decoded box) or 'prior'."""
        return self.prior_iou() if region == "prior" else self.max_iou()

    def labelled(self) -> torch.Tensor:
        """(B, 1) bool: images with at least one label (the others are verified background unless partial_empty)."""
        return self.a.mask_gt.bool().any(1)

    def ignore_background(self, mask: torch.Tensor) -> None:
        """Drop the background terms of (B, A, C) or (B, A) `mask` (a (B, A) mask means every class): the one way
        methods leave terms out of the background, so that ignore regions and uncertain boxes share it."""
        mask = mask[..., None].expand_as(self.cls_elem) if mask.dim() == 2 else mask
        self.bg_ignore = mask if self.bg_ignore is None else self.bg_ignore | mask

    def classification(self) -> torch.Tensor:
        """(B, A, C) classification elements with the ignored background terms removed (targets <= 0 there)."""
        if self.bg_ignore is None:
            return self.cls_elem
        return self.cls_elem.masked_fill(self.bg_ignore & (self.targets <= 0), 0.0)


CHECKPOINT_KEY = "yolo_partial"  # checkpoint entry holding {method NAME: state_dict()} of the methods that keep state


class Method:
    """Base of a partial-label method: its keys, its construction from them, and neutral hooks."""

    NAME: ClassVar[str] = ""  # short name (bpr, brl, ...): `loss.method(NAME)` finds the instance
    KEYS: ClassVar[dict[str, Key]] = {}
    OBJECTNESS: ClassVar[bool] = True  # acts on the YOLOv5 objectness head (else refused there in one line)
    SWITCH: ClassVar[str] = ""  # the key that turns the method on, named in refusals

    @classmethod
    def from_args(cls, k: dict[str, Any]) -> Method | None:
        """The method configured by validated keys `k`, or None when its keys leave it off."""
        raise NotImplementedError

    def apply(self, t: Terms) -> None:
        """Shape the anchor-free loss's terms in place (masks, weights, replaced elements) and add stats."""

    def apply_objectness(self, t: Any) -> None:
        """Shape the objectness head's terms in place (see losses.objectness.ObjectnessTerms)."""

    def wrap(self, criterion: Any, context: dict[str, Any]) -> Any:
        """The criterion to train with: `criterion` itself unless the method wraps it."""
        return criterion

    def preprocess_batch(self, batch: dict[str, Any], trainer: Any) -> dict[str, Any]:
        """The training batch after Ultralytics' preprocessing (trainer hook)."""
        return batch

    def setup_dataset(self, dataset: Any, mode: str, trainer: Any) -> None:
        """Adapt a dataset the trainer built (trainer hook)."""

    def epoch_end(self, trainer: Any) -> None:
        """End of a training epoch (trainer hook, every DDP rank, before validation, logging and saving)."""

    def results_columns(self, metrics: dict[str, Any]) -> dict[str, float]:
        """Extra results.csv columns for the epoch whose row holds `metrics` (trainer hook, rank 0)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State to keep in checkpoints, as plain Python values ({}: nothing to keep)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned ({} when the checkpoint has nothing for this method)."""


def find_method(methods: list[Method], name: str) -> Method | None:
    """The enabled method called `name` among `methods`, or None when it is off."""
    return next((m for m in methods if m.NAME == name), None)
