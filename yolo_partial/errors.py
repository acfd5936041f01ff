"""The exception types of yolo-partial; the CLI prints any of them as one line and exits with status 2.

Kinds differ in whose fault they are: a configuration error is a key or value the user gave, a data error is a file
of the dataset (labels, images, YAML, manifests, reviews), and a divergence is training that went wrong on good input.
"""

from __future__ import annotations


class PartialError(Exception):
    """Base of every one-line yolo-partial error: the message names the file or key and what was expected."""


class PartialConfigError(PartialError, ValueError):
    """A key or value of the run (command line, cfg file, Python overrides) that is unknown, mistyped or out of range."""


class PartialDataError(PartialError, ValueError):
    """A dataset file (data YAML, label file, image, manifest, annotation export) that is missing or malformed."""


class TrainingDivergedError(PartialError, RuntimeError):
    """Training stopped because it diverged (e.g. `nan_patience` consecutive non-finite losses), not because of input."""
