"""Hidden boxes through training augmentation, so Co-mining can tell which pseudo boxes find removed objects.

Training images are mosaicked and affine-transformed, so a manifest's hidden boxes must take the very same path as
the labels. The training dataset adds each image's hidden boxes to its label copy as extra instances whose class is
offset by `HIDDEN_CLS` before any transform runs (Mosaic and the other mixing transforms load their extra images
through the same hook); `split_hidden` takes them out of the collated batch again before the loss or a plot sees it.
`dataset.labels` itself is never changed, so label plots and class weights see only the real labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ultralytics.data.dataset import YOLODataset
from ultralytics.utils import LOGGER

from .hidden import Manifest, find_manifest

HIDDEN_CLS = 1 << 20  # class offset marking a hidden box inside the transforms; float32 holds such integers exactly


def manifest_path(data: Any) -> Path | None:
    """The hidden-box manifest named by a data YAML path (its `hidden:` key), or None for other data sources."""
    if not isinstance(data, (str, Path)) or Path(data).suffix not in {".yaml", ".yml"} or not Path(data).is_file():
        return None
    return find_manifest(data)


class HiddenBoxesDataset(YOLODataset):
    """A YOLODataset whose samples carry the manifest's hidden boxes (class + HIDDEN_CLS) through augmentation.

    Made from a built YOLODataset by `attach_hidden_boxes`; `hidden` is the loaded Manifest.
    """

    hidden: Manifest

    def update_labels_info(self, label: dict) -> dict:
        """Append the image's hidden boxes to this sample's label copy, then build its Instances as YOLODataset does."""
        boxes = self.hidden.for_image(label["im_file"])
        if self.single_cls:
            boxes = np.concatenate((np.zeros_like(boxes[:, :1]), boxes[:, 1:]), 1)
        if len(boxes):
            label["cls"] = np.concatenate((label["cls"], boxes[:, :1] + HIDDEN_CLS)).astype(np.float32)
            label["bboxes"] = np.concatenate((label["bboxes"], boxes[:, 1:])).astype(np.float32)
            if len(label.get("segments", [])):  # polygon labels: a box needs its rectangle as a segment too
                x1, y1 = boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2] - boxes[:, 4] / 2
                x2, y2 = boxes[:, 1] + boxes[:, 3] / 2, boxes[:, 2] + boxes[:, 4] / 2
                corners = np.stack((x1, y1, x2, y1, x2, y2, x1, y2), 1).reshape(-1, 4, 2).astype(np.float32)
                label["segments"] = list(label["segments"]) + list(corners)
        return super().update_labels_info(label)


def attach_hidden_boxes(dataset: YOLODataset, manifest: Manifest) -> bool:
    """Make a built training dataset carry the manifest's hidden boxes; False (with a warning) for other dataset types.

    The class is swapped in place because the transforms built in __init__ (Mosaic, MixUp, CutMix) hold this very
    object and load their extra images through its methods.
    """
    if type(dataset) is not YOLODataset:
        LOGGER.warning(f"Co-mining: hidden boxes not tracked for {type(dataset).__name__}; pseudo_hit stays 0")
        return False
    dataset.__class__ = HiddenBoxesDataset
    dataset.hidden = manifest
    n = sum(len(manifest.for_image(f)) for f in dataset.im_files)
    LOGGER.info(f"Co-mining: tracking {n} hidden boxes of {manifest.path.name} through augmentation")
    return True


def split_hidden(batch: dict[str, Any]) -> dict[str, Any]:
    """Move the marked rows of a collated batch into hidden_batch_idx (n,), hidden_cls (n, 1), hidden_bboxes (n, 4)."""
    marked = batch["cls"].view(-1) >= HIDDEN_CLS
    batch["hidden_batch_idx"] = batch["batch_idx"][marked]
    batch["hidden_cls"] = batch["cls"][marked] - HIDDEN_CLS
    batch["hidden_bboxes"] = batch["bboxes"][marked]
    for k in ("batch_idx", "cls", "bboxes"):
        batch[k] = batch[k][~marked]
    return batch

