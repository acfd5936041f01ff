"""Class-partial labels and ignore regions in the loss: the background terms nobody asserted are left out.

A data YAML's `partial:` file (yolo_partial.partial_labels) says, per image, which classes are exhaustively boxed
(`labeled_classes`), which are verified absent (`negative_classes`) and where nothing is asserted (`ignore` boxes).
Here the missing labels are known, so the loss can be exactly right:

- the background term of class c at an anchor of image i is dropped when c is neither labelled nor verified negative
  in i (classes of an image without `labeled_classes` are all labelled);
- every class's background term is dropped at anchors whose centre lies in an ignore box (half-open [x1, x2) x
  [y1, y2), so tiles that share an edge split its anchors);
- positive terms (target > 0) and the box terms are unchanged;
- with `partial_reweight=True`, each class's remaining background terms in a batch are scaled by (anchors outside
  ignore boxes) / (those where the class is asserted), clamped to at most `REWEIGHT_MAX`: where a class is asserted
  on half of the images, dropping the other half's background terms halves its negative weight against its
  positives, and the scale restores it (an unbiased estimate of the complete background sum when which images assert
  a class does not depend on their content). On the class-partial benchmark at 40 epochs, training on the *complete*
  labels under the merge's class lists cost 3.4 mAP50 points against the complete labels (seed 0): half of the gap
  that class-partial training leaves is the lost background weight, not the missing positives.

It sets `Terms.asserted`, the (B, A, C) classes whose background is explicitly asserted (the image's lists name them,
outside its ignore boxes), so that BRL, BPR, Co-mining and the teacher never relax or mine them, and drops the rest
through `Terms.ignore_background`, the mechanism the teacher shares. An image without class lists keeps every
background term (it is fully labelled by the file's schema) but asserts nothing explicitly: that is the claim every
YOLO label file makes, which the random-partial methods exist to doubt, so they still act there.

The masks travel with the pixels. The training dataset carries each image's ignore boxes, and one box covering the
whole image that names its row in a table of class lists, as marker instances (yolo_partial.hidden_labels) through
Mosaic, random perspective and flips; `preprocess_batch` splits them out of the batch. An anchor takes the lists of
the tile (source image) its centre lies in, and an anchor in no tile (padding, or a sliver of a tile that the
augmentation's candidate filter dropped) the lists common to all tiles of its image; where tiles overlap (rotation,
MixUp) only what all of them assert. A batch without markers (the validator's, or a dataset without `partial:`) is
left stock exactly.

The YOLOv5 objectness head has one objectness term for all classes: ignore boxes drop the objectness terms of unmatched
cells whose centre lies in them, and class lists are refused in one line (dropping every cell where some class is
unlabelled would leave the objectness term almost no background; keeping it would teach "no object" where objects of
the unlabelled classes are). Logged per batch (non-loss columns): `cp_drop`, background (anchor, class) terms dropped
for class lists, and `cp_ignore`, anchors whose centre lies in an ignore box.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ultralytics.utils import LOGGER
from ultralytics.utils.ops import xywh2xyxy

from ..errors import PartialConfigError, PartialDataError
from ..keyspec import flag
from .method import Method, Terms

TILE_KEYS = ("tile_batch_idx", "tile_bboxes", "tile_known", "tile_explicit")
IGNORE_KEYS = ("ignore_batch_idx", "ignore_bboxes")
PARTIAL_KEYS = (TILE_KEYS, IGNORE_KEYS)  # batch key groups (image index first) that travel with their images
WHOLE_IMAGE = np.array([[0.5, 0.5, 1.0, 1.0]], np.float32)
REWEIGHT_MAX = 10.0  # partial_reweight's cap: a class asserted on few anchors of a batch is not scaled past this


class ListsTable:
    """The distinct (known, explicit) class-list pairs of a dataset's images, and each image's row.

    `known` (P, C): classes whose background may be learned (labelled or verified negative, or all classes when the
    image has no `labeled_classes`); `explicit` (P, C): classes the image's lists name (labelled when a list is given,
    and verified negative), the ones other methods must not relax.
    """

    def __init__(self, partial, im_files: list[str], nc: int, single_cls: bool = False):
        from ..hidden_labels import MARKER_SLOT

        rows: dict[tuple[bytes, bytes], int] = {}
        known, explicit = [], []
        self.row_of: dict[str, int] = {}
        self.ignore_of: dict[str, np.ndarray] = {}
        self.listed = 0
        for f in im_files:
            p = partial.for_image(f)
            k, e = np.ones(nc, bool), np.zeros(nc, bool)
            if p is not None:
                self.listed += 1
                k, e = p.asserted(nc), p.explicit(nc)
                if len(p.ignore):
                    self.ignore_of[f] = p.ignore
            if single_cls:  # one class stands for all: asserted only where every class is
                k, e = k.all(keepdims=True), e.all(keepdims=True)
            key = (k.tobytes(), e.tobytes())
            if key not in rows:
                rows[key] = len(rows)
                known.append(k)
                explicit.append(e)
            self.row_of[f] = rows[key]
        if len(rows) > MARKER_SLOT:
            raise PartialDataError(f"{partial.path}: {len(rows)} distinct class lists among the training images: at "
                                   f"most {MARKER_SLOT} are supported")
        width = 1 if single_cls else nc
        self.known = np.array(known, bool).reshape(-1, width)
        self.explicit = np.array(explicit, bool).reshape(-1, width)

    @property
    def has_lists(self) -> bool:
        """Whether any image has a class list that leaves some class unknown."""
        return not self.known.all()


class TileRows:
    """Marker rows of one image: its whole-image tile box, whose payload is its row of the ListsTable."""

    def __init__(self, row_of: dict[str, int]):
        self.row_of = row_of

    def __call__(self, im_file: str) -> np.ndarray:
        row = self.row_of.get(im_file)  # every image of the dataset has one; without a tile nothing is known missing
        return np.zeros((0, 5), np.float32) if row is None else np.concatenate(([[float(row)]], WHOLE_IMAGE), 1)


class IgnoreRows:
    """Marker rows of one image: its ignore boxes (payload 0)."""

    def __init__(self, ignore_of: dict[str, np.ndarray]):
        self.ignore_of = ignore_of

    def __call__(self, im_file: str) -> np.ndarray:
        boxes = self.ignore_of.get(im_file)
        return np.zeros((0, 5), np.float32) if boxes is None else np.concatenate((np.zeros_like(boxes[:, :1]), boxes), 1)


def switch_class_partial(keys: dict[str, Any], overrides: dict[str, Any], partial, resumed: bool) -> dict[str, Any]:
    """The method keys with `class_partial` decided by the data: on when the data YAML names a `partial:` file, unless
    the run says class_partial=False (naive training on the same labels) or resumes a run that trained without it;
    class_partial=True without a `partial:` file is a one-line error."""
    keys = dict(keys)
    if partial is None:
        if keys["class_partial"]:
            raise PartialConfigError("class_partial=True needs a data YAML that names a partial: file (per-image "
                                     "labelled classes, negatives and ignore boxes): expected data= such a YAML, or "
                                     "class_partial=False")
        return keys
    if "class_partial" not in overrides and not resumed:
        keys["class_partial"] = True
    state = "on" if keys["class_partial"] else "off (class_partial=False: every unboxed object is background)"
    LOGGER.info(f"Class-partial labels: {partial.path} ({len(partial)} images listed); loss {state}")
    return keys


def _inside(boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(m, q) bool: point q lies in xyxy box m, half-open on the right and bottom edges."""
    x, y = points[None, :, 0], points[None, :, 1]
    return (x >= boxes[:, 0:1]) & (x < boxes[:, 2:3]) & (y >= boxes[:, 1:2]) & (y < boxes[:, 3:4])


def has_partial(batch: dict[str, Any]) -> bool:
    """Whether a batch carries class-partial markers (tiles or ignore boxes)."""
    return TILE_KEYS[0] in batch or IGNORE_KEYS[0] in batch


def image_lists(batch: dict[str, Any], b: int, points: torch.Tensor, wh: tuple[float, float], nc: int):
    """What image b of a batch asserts at pixel points (q, 2): known (q, C), explicit (q, C) and ignored (q,) bool.

    `wh` is the batch image's (width, height) in the points' unit. An image without tiles asserts every class's
    background (nothing is known to be missing) and names none explicitly.
    """
    dev, q = points.device, len(points)
    scale = torch.tensor([wh[0], wh[1], wh[0], wh[1]], device=dev, dtype=points.dtype)
    known = torch.ones(q, nc, dtype=torch.bool, device=dev)
    explicit = torch.zeros(q, nc, dtype=torch.bool, device=dev)
    ignored = torch.zeros(q, dtype=torch.bool, device=dev)
    if TILE_KEYS[0] in batch:
        mine = batch["tile_batch_idx"].to(dev) == b
        if mine.any():
            boxes = xywh2xyxy(batch["tile_bboxes"].to(dev)[mine].to(points.dtype)) * scale
            hit = _inside(boxes, points)  # (m, q)
            use = torch.where(hit.any(0, keepdim=True), hit, True).to(points.dtype)  # no tile: all tiles' lists
            not_known = (~batch["tile_known"].to(dev)[mine]).to(points.dtype)
            not_explicit = (~batch["tile_explicit"].to(dev)[mine]).to(points.dtype)
            known = (use.T @ not_known) == 0
            explicit = (use.T @ not_explicit) == 0
    if IGNORE_KEYS[0] in batch:
        mine = batch["ignore_batch_idx"].to(dev) == b
        if mine.any():
            boxes = xywh2xyxy(batch["ignore_bboxes"].to(dev)[mine].to(points.dtype)) * scale
            ignored = _inside(boxes, points).any(0)
    return known, explicit, ignored


def anchor_masks(batch: dict[str, Any], points: torch.Tensor, wh: tuple[float, float], bs: int, nc: int):
    """known (B, A, C), explicit (B, A, C) and ignored (B, A) bool at anchor points (A, 2) of every image."""
    per = [image_lists(batch, b, points, wh, nc) for b in range(bs)]
    return tuple(torch.stack(x) for x in zip(*per))


def background_weights(known: torch.Tensor, ignored: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, A, C) factors for the classification terms: per class c, (anchors outside ignore boxes) / (those where c
    is known), at most REWEIGHT_MAX, on c's background terms (target <= 0) where c is known; 1 elsewhere.

    Args:
        known (torch.Tensor): (B, A, C) bool, class c's background may be learned at the anchor.
        ignored (torch.Tensor): (B, A) bool, the anchor's centre lies in an ignore box.
        targets (torch.Tensor): (B, A, C) classification targets.
    """
    kept = known & ~ignored[..., None]
    n_kept = kept.flatten(0, 1).sum(0).float()  # (C,); counts in float32: a batch's anchors overflow half precision
    scale = ((~ignored).sum().float() / n_kept.clamp(min=1)).clamp(1.0, REWEIGHT_MAX).to(targets.dtype)
    return torch.where(kept & (targets <= 0), scale, torch.ones_like(targets))


def drop_asserted(pseudo: dict[str, torch.Tensor], view: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Pseudo boxes (batch_idx, cls, normalised xywh bboxes) minus those of a class asserted at their centre: mining
    never adds an object of a class the image labels exhaustively or verifies absent there."""
    if not has_partial(view) or not len(pseudo["cls"]):
        return pseudo
    keep = torch.ones(len(pseudo["cls"]), dtype=torch.bool, device=pseudo["cls"].device)
    nc = int(view["tile_known"].shape[1]) if TILE_KEYS[0] in view else 1
    for b in pseudo["batch_idx"].unique().tolist():
        rows = (pseudo["batch_idx"] == b).nonzero().squeeze(1)
        _, explicit, ignored = image_lists(view, int(b), pseudo["bboxes"][rows, :2].float(), (1.0, 1.0), nc)
        cls = pseudo["cls"][rows, 0].long().clamp(max=nc - 1)
        keep[rows] = ~(explicit.gather(1, cls[:, None])[:, 0] & ~ignored)
    return {k: v[keep] for k, v in pseudo.items()}


def cell_centres(shapes: list[torch.Size], stride: torch.Tensor) -> torch.Tensor:
    """(A, 2) pixel centres of the YOLOv5 head's cells, flattened as its loss flattens them (level, anchor, row,
    column), from each level's (B, na, ny, nx, no) shape."""
    out = []
    for shape, s in zip(shapes, stride.tolist()):
        na, ny, nx = shape[1:4]
        gy, gx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        xy = (torch.stack((gx, gy), -1).float().reshape(-1, 2) + 0.5) * s
        out.append(xy.repeat(na, 1))
    return torch.cat(out).to(stride.device)


class ClassPartial(Method):
    """Drop the background terms that a `partial:` file leaves unasserted; mark the asserted ones for the others.

    Keys: `class_partial` (set by the trainer from the data, see `switch_class_partial`) and `partial_eval` (read by the
    trainer's validator: partial-aware mAP beside Ultralytics', and best.pt chosen by it).
    """

    KEYS = {
        "class_partial": flag("class-partial loss: drop background terms a partial: file does not assert (on by "
                              "itself when the data YAML names one; False trains naively on it)"),
        "partial_eval": flag("val: partial-aware (federated, ignore-box) mAP beside Ultralytics' mAP when the partial: "
                             "file lists val images; best.pt chosen by it", default=True),
        "partial_reweight": flag("class-partial loss: scale each class's remaining background terms by the batch's "
                                 f"anchors over those where the class is asserted (at most {REWEIGHT_MAX:g}x), "
                                 "restoring the negative weight that the dropped terms take away"),
    }
    NAME = "class_partial"
    SWITCH = "class_partial"

    def __init__(self, reweight: bool = False):
        self.table: ListsTable | None = None
        self.reweight = reweight

    @classmethod
    def from_args(cls, k: dict[str, Any]) -> ClassPartial | None:
        return cls(k["partial_reweight"]) if k["class_partial"] else None

    def apply(self, t: Terms) -> None:
        """Set `t.asserted` and drop the unasserted background terms, from the batch's tiles and ignore boxes."""
        a, stats = t.a, {}
        bs, _, nc = t.cls_elem.shape
        if has_partial(t.batch):
            h, w = a.imgsz.tolist()
            known, explicit, ignored = anchor_masks(t.batch, a.anchor_points * a.stride_tensor, (w, h), bs, nc)
            asserted = explicit & ~ignored[..., None]
            t.asserted = asserted if t.asserted is None else t.asserted & asserted
            t.ignore_background(~known | ignored[..., None])
            stats = {"cp_drop": (~known & ~ignored[..., None] & (t.targets <= 0)).sum().float(),
                     "cp_ignore": ignored.sum().float()}
            if self.reweight:
                t.cls_elem = t.cls_elem * background_weights(known, ignored, t.targets)
        zero = t.cls_elem.new_zeros(()).detach()
        t.stats.update({"cp_drop": zero, "cp_ignore": zero, **stats})

    def apply_objectness(self, t) -> None:
        """Ignore boxes drop the objectness terms of unmatched cells whose centre lies in them (class lists are refused
        before training, see setup_dataset)."""
        p, batch, stats = t.p, getattr(t, "batch", None) or {}, {}
        if has_partial(batch) and getattr(t, "cell_xy", None) is not None:
            h, w = batch["img"].shape[2:]
            bs = p.obj_logit.shape[0]
            _, _, ignored = anchor_masks(batch, t.cell_xy.to(p.obj_logit.device), (w, h), bs, 1)
            ignored = ignored & ~p.matched
            t.keep_cell = t.keep_cell & ~ignored
            stats = {"cp_ignore": ignored.sum().float()}
        t.stats.update({"cp_drop": p.obj_logit.new_zeros(()), "cp_ignore": p.obj_logit.new_zeros(()), **stats})

    def setup_dataset(self, dataset: Any, mode: str, trainer: Any) -> None:
        """The training set carries each image's ignore boxes and its tile (row of this method's table of class lists)
        through augmentation; the objectness head refuses class lists here, before the first batch."""
        partial = getattr(trainer, "partial_labels", None)
        if mode != "train" or partial is None:
            return
        from ..hidden_labels import IGNORE, TILE, attach_markers

        nc = len(trainer.data["names"])
        self.table = table = ListsTable(partial, list(dataset.im_files), nc, bool(dataset.single_cls))
        if table.has_lists and _objectness_head(trainer):
            raise PartialConfigError(
                f"{partial.path}: class lists (labeled_classes) are not supported by the objectness head "
                "(yolov5*-obj.yaml), whose objectness term asserts every class at once: expected an anchor-free model "
                "such as yolov8n.yaml (ignore boxes alone do work on this head)")
        if not table.listed:
            LOGGER.warning(f"Class-partial labels: {partial.path} lists none of the {len(dataset.im_files)} training "
                           f"images (keys are image paths relative to {partial.root}); the loss stays stock")
        attach_markers(dataset, TILE, TileRows(table.row_of), "class-partial tiles")
        attach_markers(dataset, IGNORE, IgnoreRows(table.ignore_of), "ignore boxes")
        n_ignore = sum(len(v) for v in table.ignore_of.values())
        LOGGER.info(f"Class-partial labels: {table.listed} of {len(dataset.im_files)} training images listed, "
                    f"{len(table.known)} distinct class lists, {n_ignore} ignore boxes, carried through augmentation")

    def preprocess_batch(self, batch: dict[str, Any], trainer: Any) -> dict[str, Any]:
        """Split the tiles and ignore boxes out of the labels; each tile gets its image's class lists."""
        from ..hidden_labels import IGNORE, TILE, split_markers

        if self.table is None or "cls" not in batch:
            return batch
        batch = split_markers(split_markers(batch, TILE, "tile"), IGNORE, "ignore")
        row = batch.pop("tile_cls").view(-1).long().cpu().numpy()
        dev = batch["tile_bboxes"].device
        batch["tile_known"] = torch.from_numpy(self.table.known[row]).to(dev)
        batch["tile_explicit"] = torch.from_numpy(self.table.explicit[row]).to(dev)
        batch.pop("ignore_cls")
        return batch


def _objectness_head(trainer: Any) -> bool:
    """Whether the trainer's model has the YOLOv5 objectness head."""
    from ultralytics.utils.torch_utils import unwrap_model

    from ..models import ObjectnessDetect

    model = getattr(trainer, "model", None)
    model = unwrap_model(model) if isinstance(model, torch.nn.Module) else None
    return model is not None and isinstance(model.model[-1], ObjectnessDetect)
