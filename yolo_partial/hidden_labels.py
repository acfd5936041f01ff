"""Boxes that are not labels, carried through training augmentation with the images: marker instances.

Training images are mosaicked, affine-transformed and flipped, so any box that must stay aligned with the pixels has to
take the very same path as the labels. The training dataset appends such boxes to its label copy as extra instances
whose class is `kind * MARKER_SLOT + payload`, before any transform runs (Mosaic and the other mixing transforms load
their extra images through the same hook); `split_markers` takes each kind out of the collated batch again before the
loss or a plot sees it. `dataset.labels` itself is never changed, so label plots and class weights see only the real
labels. The kinds:

- `HIDDEN` (payload: the class): a hidden-box manifest's boxes, for Co-mining's `pseudo_hit` (losses.comining);
- `IGNORE` (payload 0): a `partial:` file's ignore boxes (losses.class_partial);
- `TILE` (payload: a row of a table the method keeps): one box covering the whole source image, so that after Mosaic
  every anchor can tell whose image it shows, and take that image's class lists (losses.class_partial);
- `RELABEL` (payload: the class): the teacher's relabelling pass's boxes (losses.teacher_relabel).

Markers travel as Ultralytics' instances do: clipped at the image border, dropped by random_perspective's candidate
filter when little of them stays visible, and taken into account by CutMix's choice of a free area.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from ultralytics.data.dataset import YOLODataset
from ultralytics.utils import LOGGER

from .hidden import Manifest, find_manifest

MARKER_SLOT = 1 << 20  # payloads of one kind; float32 holds the classes of 16 slots (< 2**24) exactly
HIDDEN, IGNORE, TILE, RELABEL = 1, 2, 3, 4  # marker kinds
HIDDEN_CLS = HIDDEN * MARKER_SLOT  # class offset marking a hidden box inside the transforms
MARKER_KEYS = ("batch_idx", "cls", "bboxes")

# kind -> rows for one image: (n, 5) float array of payload, cx, cy, w, h (normalised)
MarkerRows = Callable[[str], np.ndarray]


def manifest_path(data: Any) -> Path | None:
    """The hidden-box manifest named by a data YAML path (its `hidden:` key), or None for other data sources."""
    if not isinstance(data, (str, Path)) or Path(data).suffix not in {".yaml", ".yml"} or not Path(data).is_file():
        return None
    return find_manifest(data)


class MarkedDataset(YOLODataset):
    """A YOLODataset whose samples carry marker instances (class kind * MARKER_SLOT + payload) through augmentation.

    Made from a built YOLODataset by `attach_markers`; `markers` maps each kind to its rows per image file.
    """

    markers: dict[int, MarkerRows]

    def update_labels_info(self, label: dict) -> dict:
        """Append the image's marker rows to this sample's label copy, then build its Instances as YOLODataset does."""
        rows = [(kind, fn(label["im_file"])) for kind, fn in sorted(self.markers.items())]
        rows = [(kind, r) for kind, r in rows if len(r)]
        if rows:
            cls = np.concatenate([r[:, :1] + kind * MARKER_SLOT for kind, r in rows])
            boxes = np.concatenate([r[:, 1:] for _, r in rows])
            label["cls"] = np.concatenate((label["cls"], cls)).astype(np.float32)
            label["bboxes"] = np.concatenate((label["bboxes"], boxes)).astype(np.float32)
            if len(label.get("segments", [])):  # polygon labels: a box needs its rectangle as a segment too
                x1, y1 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
                x2, y2 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
                corners = np.stack((x1, y1, x2, y1, x2, y2, x1, y2), 1).reshape(-1, 4, 2).astype(np.float32)
                label["segments"] = list(label["segments"]) + list(corners)
        return super().update_labels_info(label)


HiddenBoxesDataset = MarkedDataset  # the name Co-mining's hidden boxes were introduced under


def attach_markers(dataset: YOLODataset, kind: int, rows: MarkerRows, what: str) -> bool:
    """Make a built training dataset carry markers of one kind; False (with a warning) for other dataset types.

    The class is swapped in place because the transforms built in __init__ (Mosaic, MixUp, CutMix) hold this very
    object and load their extra images through its methods. Kinds already attached stay.
    """
    if type(dataset) not in (YOLODataset, MarkedDataset):
        LOGGER.warning(f"{what}: not tracked through augmentation for {type(dataset).__name__}")
        return False
    if type(dataset) is YOLODataset:
        dataset.__class__ = MarkedDataset
        dataset.markers = {}
    dataset.markers[kind] = rows
    return True


def split_markers(batch: dict[str, Any], kind: int, prefix: str) -> dict[str, Any]:
    """Move the rows of one marker kind out of a collated batch: `{prefix}_batch_idx` (n,), `{prefix}_cls` (n, 1)
    holding the payload, `{prefix}_bboxes` (n, 4) normalised xywh."""
    cls = batch["cls"].view(-1)
    marked = (cls >= kind * MARKER_SLOT) & (cls < (kind + 1) * MARKER_SLOT)
    batch[f"{prefix}_batch_idx"] = batch["batch_idx"][marked]
    batch[f"{prefix}_cls"] = batch["cls"][marked] - kind * MARKER_SLOT
    batch[f"{prefix}_bboxes"] = batch["bboxes"][marked]
    for k in MARKER_KEYS:
        batch[k] = batch[k][~marked]
    return batch


def attach_hidden_boxes(dataset: YOLODataset, manifest: Manifest) -> bool:
    """Make a built training dataset carry the manifest's hidden boxes; False (with a warning) for other dataset types."""

    def rows(im_file: str) -> np.ndarray:
        boxes = manifest.for_image(im_file)
        return np.concatenate((np.zeros_like(boxes[:, :1]), boxes[:, 1:]), 1) if dataset.single_cls else boxes

    if not attach_markers(dataset, HIDDEN, rows, "Co-mining: hidden boxes (pseudo_hit stays 0)"):
        return False
    n = sum(len(manifest.for_image(f)) for f in dataset.im_files)
    LOGGER.info(f"Co-mining: tracking {n} hidden boxes of {manifest.path.name} through augmentation")
    return True


def split_hidden(batch: dict[str, Any]) -> dict[str, Any]:
    """Move the hidden boxes of a collated batch into hidden_batch_idx (n,), hidden_cls (n, 1), hidden_bboxes (n, 4)."""
    return split_markers(batch, HIDDEN, "hidden")
