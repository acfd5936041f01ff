"""yolo-partial: train Ultralytics YOLO detectors on partially annotated data."""

from .offline import set_offline_env

set_offline_env()  # before Ultralytics is imported: it reads these at import time

from . import models  # noqa: E402, F401  (lets Ultralytics build and load the ObjectnessDetect head)
from .trainer import PartialDetectionTrainer  # noqa: E402

__version__ = "0.1.0"
__all__ = ("PartialDetectionTrainer", "__version__")
