"""Non-finite guard: a batch whose loss is NaN or infinite leaves the weights alone; a run of them stops training.

Ultralytics only notices a NaN loss at the end of an epoch (and then reloads last.pt). Here the trainer checks every
batch's loss before its backward pass: a bad batch contributes no gradient, no optimizer step and no EMA update, and is
counted; `nan_patience` consecutive bad batches stop training with a one-line error.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .errors import TrainingDivergedError
from .keyspec import at_least

KEYS = {"nan_patience": at_least(10, 1, "consecutive non-finite batches (skipped) before training stops")}
SKIPPED_COLUMN = "train/nonfinite_skipped"  # results.csv column; no "loss" in the name keeps it out of the loss plots


class NonFiniteLossError(TrainingDivergedError):
    """Training stopped after `nan_patience` consecutive batches with a non-finite loss or gradients."""


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is True on any DDP rank, so that every rank takes the same skip decision (flag without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class NonFiniteGuard:
    """Per-batch bookkeeping of the trainer's non-finite checks.

    Args:
        patience (int): Consecutive bad batches (or optimizer steps with non-finite gradients) before stopping.

    Attributes:
        skipped (int): Batches and optimizer steps skipped in the current epoch (the results.csv column).
        run (int): Consecutive bad ones so far.
        checked (bool): This batch's loss was checked (DDP assigns the trainer's loss twice per batch).
        pending (bool): Gradients of a good batch wait for the next optimizer step.
    """

    def __init__(self, patience: int):
        self.patience, self.skipped, self.run = patience, 0, 0
        self.epoch, self.batch, self.checked, self.pending = None, -1, False, False

    def start_batch(self, epoch: int) -> None:
        """Begin a training batch; a new epoch restarts the skip count."""
        if epoch != self.epoch:
            self.epoch, self.batch, self.skipped = epoch, -1, 0
        self.batch += 1
        self.checked = False

    def check_loss(self, loss: torch.Tensor, weights: str) -> bool:
        """Record whether this batch's loss is non-finite on any rank -> True when the batch must be skipped."""
        self.checked = True
        bad = any_rank(not bool(torch.isfinite(loss.detach()).all()), loss.device)
        self.record(bad, weights)
        return bad

    def record(self, bad: bool, weights: str) -> None:
        """Count a good or bad batch/step; raise NonFiniteLossError once `patience` bad ones follow each other."""
        if not bad:
            self.run, self.pending = 0, True
            return
        self.skipped += 1
        self.run += 1
        if self.run >= self.patience:
            raise NonFiniteLossError(
                f"training stopped at epoch {self.epoch + 1}, batch {self.batch + 1}: {self.run} consecutive batches "
                f"with a non-finite loss or gradients (NaN/Inf) were skipped, so the weights were not updated by them "
                f"and {weights} holds the last saved epoch; lower lr0 or check the labels, or raise "
                f"nan_patience={self.patience}")
