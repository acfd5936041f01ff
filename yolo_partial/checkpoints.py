"""Checkpoints given as `model=`: one-line errors for files that are not Ultralytics detection checkpoints, offline
weight names, and what `resume=True` may resume (an interrupted run, by path or the latest one)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from .errors import PartialConfigError, PartialDataError
from .offline import offline

WEIGHT_SUFFIXES = (".pt", ".pth")


def check_model_source(model: Any, key: str = "model") -> None:
    """Raise a one-line error when `model` names a weights file that cannot be a checkpoint, before Ultralytics reads it.

    Checked: a folder, an empty file, a file that is not a torch zip archive (text, truncated), and, offline, a
    weights name that is not a local file (Ultralytics would try to download it). Model YAMLs and exports pass.
    """
    if not isinstance(model, (str, Path)):
        return
    p = Path(model)
    if p.is_dir():
        raise PartialDataError(f"{key}={model} is a folder: expected a .pt checkpoint file such as "
                               f"runs/detect/train/weights/best.pt")
    if p.suffix not in WEIGHT_SUFFIXES:
        return
    if not p.exists():
        if offline():
            raise PartialConfigError(
                f"{key}={model} is not a local file and no weights are downloaded offline: expected a local "
                f"checkpoint path, or {p.stem}.yaml to train from scratch (set YOLO_OFFLINE=0 to let Ultralytics "
                f"download it)")
        return  # Ultralytics downloads official weights by name
    if p.stat().st_size == 0:
        raise PartialDataError(f"{model}: empty file (0 bytes): expected a PyTorch checkpoint")
    if not zipfile.is_zipfile(p):
        raise PartialDataError(f"{model}: not a PyTorch checkpoint (not a torch.save archive, or truncated): expected "
                               f"a .pt file written by Ultralytics or yolo-partial")


def load_model(model: Any, key: str = "model"):
    """Ultralytics' YOLO(model), with every way a checkpoint can be unusable turned into one line naming the file."""
    from ultralytics import YOLO

    check_model_source(model, key)
    try:
        yolo = YOLO(model)
    except (PartialConfigError, PartialDataError):
        raise
    except Exception as e:  # Ultralytics raises TypeError/KeyError/RuntimeError/AttributeError for foreign files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PartialDataError(f"{model}: not a usable Ultralytics checkpoint ({type(e).__name__}: {first[:160]}): "
                               f"expected a detection model .pt or a model YAML") from None
    if yolo.task != "detect":
        raise PartialDataError(f"{model}: a {yolo.task} model: expected a detection model")
    return yolo


def resumable(last: Any) -> Path:
    """The checkpoint `resume=True` continues: `last` if given and interrupted, else the newest last.pt under the runs
    folder; one-line errors for a finished run, a non-checkpoint or no run at all."""
    if last in (None, "", True):
        from ultralytics.utils import SETTINGS
        from ultralytics.utils.files import get_latest_run

        runs = Path(SETTINGS["runs_dir"])
        found = get_latest_run(str(runs))
        if not found:
            raise PartialConfigError(f"resume=True: no run to resume (no last.pt under {runs}): expected "
                                     f"model=runs/detect/trainN/weights/last.pt of an interrupted run")
        last = found
    yolo = load_model(last)
    ckpt = yolo.ckpt or {}
    if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:
        epochs = (ckpt.get("train_args") or {}).get("epochs", "?")
        raise PartialConfigError(
            f"resume=True: {last} is a finished run ({epochs} epochs), nothing to resume: expected the last.pt of an "
            f"interrupted run, or a new training with model={last} and the epochs you want")
    return Path(last)
