"""yolo-partial's model heads and the model YAMLs shipped in cfg/models/ (Ultralytics' builder learns the objectness
head through yolo_partial.patches.install_objectness_parser, which importing yolo_partial runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import PartialConfigError
from .objectness import YOLOV5_ANCHORS, ObjectnessDetect, decode_boxes

__all__ = ("YOLOV5_ANCHORS", "ObjectnessDetect", "decode_boxes", "resolve_model")


def resolve_model(model: Any) -> Any:
    """The path of a shipped model YAML when `model` names one (e.g. 'yolov5n-obj.yaml', 'cfg/models/yolov5n-obj.yaml'),
    else `model` as given.

    An existing file of that name in the working directory wins, as do Ultralytics' own names (yolov8n.yaml, x.pt).
    """
    from .. import assets

    if isinstance(model, (str, Path)) and not Path(model).exists():
        shipped = assets.resolve("models", model)
        if shipped is not None:
            return str(shipped)
        if Path(model).stem.endswith("-obj"):  # Ultralytics would report a file name it derived from this one
            raise PartialConfigError(f"model={model} does not exist: expected a file or one of {assets.names('models')}")
    return model
