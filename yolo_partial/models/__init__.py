"""yolo-partial's model heads and the model YAMLs shipped in cfg/models/, wired into Ultralytics' model builder.

Importing this module (yolo_partial does) lets Ultralytics build YAMLs whose last row is ObjectnessDetect:
Ultralytics' parse_model gives the input channels of a multi-input layer only to its own head classes, so such a row is
built as a stock Detect first (for the channels) and then replaced by the objectness head.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ultralytics.nn import tasks
from ultralytics.utils import LOGGER

from ..errors import PartialConfigError
from .objectness import YOLOV5_ANCHORS, ObjectnessDetect, decode_boxes

MODELS_DIR = Path(__file__).resolve().parents[2] / "cfg" / "models"

__all__ = ("MODELS_DIR", "YOLOV5_ANCHORS", "ObjectnessDetect", "decode_boxes", "resolve_model")


def resolve_model(model: Any) -> Any:
    """The path of a shipped model YAML when `model` names one by file name (e.g. 'yolov5n-obj.yaml'), else `model`.

    An existing file of that name in the working directory wins, as do Ultralytics' own names (yolov8n.yaml, x.pt).
    """
    if isinstance(model, (str, Path)) and not Path(model).exists():
        shipped = MODELS_DIR / Path(model).name
        if shipped.is_file():
            return str(shipped)
        if shipped.stem.endswith("-obj"):  # Ultralytics would report a file name it derived from this one
            names = ", ".join(sorted(p.name for p in MODELS_DIR.glob("*.yaml")))
            raise PartialConfigError(f"model={model} does not exist: expected a file or one of {names}")
    return model


def _with_objectness_head(parse_model):
    """Wrap Ultralytics' parse_model(d, ch, verbose) so that a last row naming ObjectnessDetect builds that head."""

    @functools.wraps(parse_model)
    def wrapper(d: dict, ch: int, verbose: bool = True):
        row = d["head"][-1]
        if row[2] != ObjectnessDetect.__name__:
            return parse_model(d, ch, verbose)
        stand_in = {**d, "head": [*d["head"][:-1], [row[0], 1, "Detect", [d["nc"]]]]}
        layers, save = parse_model(stand_in, ch, verbose)
        layers[-1] = ObjectnessDetect.from_row(row, d, layers[-1])
        if verbose:
            h = layers[-1]
            LOGGER.info(f"{h.i:>3} {h.type} replaces the Detect above: {h.np} params, {h.na} anchors/level, nc={h.nc}")
        return layers, save

    return wrapper


if not hasattr(tasks.parse_model, "__wrapped__"):  # once per process, whatever imports this module
    tasks.parse_model = _with_objectness_head(tasks.parse_model)
