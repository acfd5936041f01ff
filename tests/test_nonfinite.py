"""The non-finite guard (every method): a NaN/inf batch leaves weights and EMA alone and is counted; a run of them
stops training with the last good checkpoint intact."""

import hashlib
import math

import pytest
import torch

from yolo_partial import PartialDetectionTrainer
from yolo_partial.errors import TrainingDivergedError
from yolo_partial.nonfinite import SKIPPED_COLUMN, NonFiniteGuard, NonFiniteLossError


def test_guard_bookkeeping():
    g = NonFiniteGuard(patience=3)
    g.start_batch(0)
    assert not g.check_loss(torch.tensor([1.0, 2.0]), "w/last.pt") and g.pending and g.checked
    for i in range(2):
        g.start_batch(0)
        assert g.check_loss(torch.tensor([1.0, float("inf")]), "w/last.pt") and g.run == i + 1
    assert g.skipped == 2
    g.start_batch(1)  # a new epoch restarts the column's count, not the run of bad batches
    assert g.skipped == 0 and g.batch == 0
    with pytest.raises(NonFiniteLossError, match=r"^training stopped at epoch 2, batch 1: 3 consecutive .* w/last.pt"):
        g.check_loss(torch.tensor(float("nan")), "w/last.pt")
    g.start_batch(1)
    assert not g.check_loss(torch.tensor(0.5), "w/last.pt") and g.run == 0


class NaNOn:
    """A criterion wrapper making the loss NaN ('loss') or, with a finite loss, the gradients NaN ('grad') on the
    chosen (1-based) calls."""

    def __init__(self, crit, bad, mode="loss"):
        self.crit, self.bad, self.mode, self.calls = crit, set(bad), mode, 0

    def __call__(self, preds, batch):
        self.calls += 1
        loss, items = self.crit(preds, batch)
        if self.calls in self.bad and self.mode == "loss":
            loss = loss * float("nan")
            items = {k: v * float("nan") for k, v in items.items()}
        elif self.calls in self.bad:
            loss = loss + (preds["scores"].sum() * 0).sqrt()  # adds 0, but d sqrt(x)/dx at 0 is infinite: NaN grads
        return loss, items


TINY = dict(epochs=1, imgsz=64, batch=4, nbs=4, workers=0, plots=False, amp=False, verbose=False, warmup_epochs=0)


def _guarded_run(data, tmp_path, bad, snapshots, mode="loss", **kw):
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import unwrap_model

    yolo = YOLO("yolov8n.yaml")

    def wrap(trainer):
        model = unwrap_model(trainer.model)
        model.criterion = NaNOn(model.criterion, bad, mode)

    def snap(trainer):
        params = {k: v.detach().clone() for k, v in unwrap_model(trainer.model).named_parameters()}
        ema = {k: v.detach().clone() for k, v in trainer.ema.ema.state_dict().items()}
        snapshots.append((params, ema))

    yolo.add_callback("on_train_start", wrap)
    yolo.add_callback("on_train_batch_start", lambda t: snap(t) if not snapshots else None)
    yolo.add_callback("on_train_batch_end", snap)
    yolo.train(trainer=PartialDetectionTrainer, data=str(data), project=str(tmp_path), name="g", exist_ok=True,
               **{**TINY, **kw})  # fmt: skip
    return yolo.trainer


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", ["loss", "grad"])
def test_nonfinite_batch_is_skipped_and_counted(aquarium_small, tmp_path, mode):
    import pandas as pd

    snaps = []
    t = _guarded_run(aquarium_small, tmp_path, bad={2}, snapshots=snaps, mode=mode)  # 8 images, batch 4: 2 calls
    (p0, e0), (p1, e1), (p2, e2) = snaps
    assert not _same(p0, p1) and not _same(e0, e1)  # the good first batch stepped the weights and the EMA
    assert _same(p1, p2) and _same(e1, e2)  # the NaN batch changed neither
    df = pd.read_csv(t.csv)
    assert df[SKIPPED_COLUMN].tolist() == [1]
    assert all(math.isfinite(v) for v in df.filter(like="train/").iloc[0])
    assert t.guard.run == 1 and torch.isfinite(t.loss)  # Ultralytics' epoch-end NaN check (reload last.pt) stays quiet
    assert (t.loss == 0) == (mode == "loss")  # a non-finite loss is replaced by zero


def test_nonfinite_patience_stops_with_last_good_checkpoint(aquarium_small, tmp_path):
    digests = []

    def digest(trainer):
        digests.append(hashlib.sha256(trainer.last.read_bytes()).hexdigest())

    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import unwrap_model

    yolo = YOLO("yolov8n.yaml")
    yolo.add_callback("on_train_start", lambda tr: setattr(unwrap_model(tr.model), "criterion",
                                                           NaNOn(unwrap_model(tr.model).criterion, {3, 4})))
    yolo.add_callback("on_model_save", digest)
    with pytest.raises(NonFiniteLossError) as e:
        yolo.train(trainer=PartialDetectionTrainer, data=str(aquarium_small), project=str(tmp_path), name="p",
                   **{**TINY, "epochs": 2, "val": False}, nan_patience=2)  # fmt: skip
    msg = str(e.value)
    assert "\n" not in msg and "epoch 2, batch 2" in msg and "nan_patience=2" in msg and "last.pt" in msg
    last = tmp_path / "p" / "weights" / "last.pt"
    assert len(digests) == 1 and hashlib.sha256(last.read_bytes()).hexdigest() == digests[0]  # epoch 1's, untouched
    from ultralytics import YOLO as Stock

    assert Stock(last).ckpt["epoch"] == 0


def test_divergence_is_not_a_configuration_error():
    from yolo_partial.errors import PartialConfigError

    assert issubclass(NonFiniteLossError, TrainingDivergedError) and not issubclass(NonFiniteLossError, PartialConfigError)
