"""yolo-partial: train Ultralytics YOLO detectors on partially annotated data."""

from .offline import set_offline_env

set_offline_env()  # before Ultralytics is imported: it reads these at import time

from .patches import install_objectness_parser  # noqa: E402

install_objectness_parser()  # Ultralytics builds (and unpickles) the ObjectnessDetect head

from .trainer import PartialDetectionTrainer  # noqa: E402

__version__ = "0.1.0"
__all__ = ("PartialDetectionTrainer", "__version__")
