"""The registered partial-label methods, in the order they shape the loss. Adding a method: one file, one line here."""

from __future__ import annotations

from typing import Any

from .bpr import BoxPredictionRebalancing
from .brl import BackgroundRecalibration
from .class_partial import ClassPartial
from .comining import CoMining
from .method import Method
from .scb import ScaleBalance
from .teacher import Teacher

# Class-partial labels come first: they set which background terms are asserted before any method relaxes one. BRL
# replaces the classification term, so it comes before SCB (weights it) and BPR (masks it); the teacher
# (weights its pseudo positives, ignores its uncertain boxes; also a wrapper) and the other wrappers come last
METHODS: tuple[type[Method], ...] = (ClassPartial, BackgroundRecalibration, ScaleBalance, BoxPredictionRebalancing,
                                     Teacher, CoMining)


def build_methods(k: dict[str, Any]) -> list[Method]:
    """The methods turned on by validated method keys `k`, in registry order."""
    return [m for cls in METHODS if (m := cls.from_args(k)) is not None]
