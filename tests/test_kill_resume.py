"""A training process killed hard (SIGKILL) resumes from its last checkpoint with the method keys and the partial loss;
a process that dies while writing a checkpoint leaves the previous one intact."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from yolo_partial.losses import PartialDetectionLoss

TINY = 'imgsz=64, batch=4, workers=0, plots=False, amp=False, project=project, name="run", exist_ok=True'

KILLED_RUN = f"""
import sys, time
from pathlib import Path
from ultralytics import YOLO
from yolo_partial import PartialDetectionTrainer

data, project, marker = sys.argv[1:4]

def park(trainer):  # first batch of the second epoch done: last.pt holds epoch 1, the run is mid-epoch
    if trainer.epoch == 1:
        Path(marker).write_text("epoch 2 started")
        time.sleep(600)

yolo = YOLO("yolov8n.yaml")
yolo.add_callback("on_train_batch_end", park)
yolo.train(trainer=PartialDetectionTrainer, data=data, epochs=3, drop_neg_obj=0.5, brl=True, {TINY})
"""


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < end, f"{path} not written in {timeout} s"
        time.sleep(0.2)


def test_sigkill_mid_epoch_then_cli_resume(aquarium_small, tmp_path, monkeypatch):
    """Kill -9 during epoch 2 of 3 (BPR objectness drops + BRL), then `yolo-partial train resume=True model=last.pt`."""
    from ultralytics.utils import callbacks
    from ultralytics.utils.patches import torch_load

    from yolo_partial.cli import main

    marker, log = tmp_path / "epoch2", tmp_path / "killed.log"
    with open(log, "w") as f:  # a file, not a pipe: a full pipe would stall the child before the marker
        proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(aquarium_small), str(tmp_path), str(marker)],
                                stdout=f, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(marker, proc, log)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    last = tmp_path / "run" / "weights" / "last.pt"
    ckpt = torch_load(last, map_location="cpu")
    assert ckpt["epoch"] == 0 and ckpt["train_args"]["drop_neg_obj"] == 0.5 and ckpt["train_args"]["brl"] is True

    seen = []

    def capture(trainer):  # the CLI builds its own YOLO object: its trainer is reached through a default callback
        seen.append(trainer)

    default = callbacks.base.default_callbacks
    monkeypatch.setitem(default, "on_train_end", [*default["on_train_end"], capture])
    assert main(["train", "resume=True", f"model={last}"]) == 0
    (t,) = seen
    assert t.start_epoch == 1 and t.epoch == 2 and t.save_dir == tmp_path / "run"
    assert t.args.drop_neg_obj == 0.5 and t.args.brl is True and t.args.drop_neg_box == 0.0
    crit = t.model.criterion
    assert isinstance(crit, PartialDetectionLoss) and crit.method("bpr").drop_obj == 0.5 and crit.method("brl") is not None
    df = pd.read_csv(t.csv)
    assert list(df["epoch"]) == [1, 2, 3]  # epoch 1 from the killed run, 2-3 resumed
    assert (df["train/obj_drop"] > 0).all() and (df["train/brl_conf"] > 0).all()
    assert not list((t.wdir).glob(".*")), "a temporary checkpoint was left behind"


DIES_WHILE_WRITING = f"""
import io, os, pathlib, shutil, sys
import torch
from yolo_partial import PartialDetectionTrainer
from ultralytics import YOLO

data, project, where = sys.argv[1:4]
weights = pathlib.Path(project) / "run" / "weights"
writes = []

def half_then_die(path, payload):
    with open(path, "wb") as f:  # a partial checkpoint reaches the disk, then the process is gone
        f.write(payload[: len(payload) // 2])
    os._exit(3)

def keep_good_copy(trainer):
    shutil.copy(weights / "last.pt", pathlib.Path(project) / "good.pt")

if where == "save":  # epoch 2's checkpoint: Ultralytics' save_model writes bytes with Path.write_bytes
    write_bytes = pathlib.Path.write_bytes
    def dying_write_bytes(self, data):
        if self.name == "last.pt":
            writes.append(self)
            if len(writes) == 2:
                half_then_die(self, data)
        return write_bytes(self, data)
    pathlib.Path.write_bytes = dying_write_bytes
    epochs = 2
else:  # the final strip_optimizer rewrite with torch.save to a path
    save = torch.save
    def dying_save(obj, f, *args, **kwargs):
        if not isinstance(f, io.IOBase):
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            half_then_die(f, buffer.getvalue())
        return save(obj, f, *args, **kwargs)
    torch.save = dying_save
    epochs = 1

yolo = YOLO("yolo26n.yaml")
yolo.add_callback("on_model_save", keep_good_copy)
yolo.train(trainer=PartialDetectionTrainer, data=data, epochs=epochs, val=False, drop_neg_obj=0.5, scb=True, {TINY})
"""


@pytest.mark.parametrize("where", ["save", "strip"])
def test_death_while_writing_keeps_last_good_checkpoint(aquarium_small, tmp_path, where):
    """The process dies (os._exit) halfway through writing a checkpoint: in the per-epoch save, or in the final
    strip_optimizer rewrite. last.pt is still the previous complete checkpoint, byte for byte, and loads."""
    from ultralytics.utils.patches import torch_load

    r = subprocess.run([sys.executable, "-c", DIES_WHILE_WRITING, str(aquarium_small), str(tmp_path), where],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 3, r.stderr[-3000:]  # it died where planned, not earlier
    weights = tmp_path / "run" / "weights"
    good = (tmp_path / "good.pt").read_bytes()
    assert (weights / "last.pt").read_bytes() == good
    ckpt = torch_load(weights / "last.pt", map_location="cpu")
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None  # epoch 1's checkpoint, not yet stripped
    assert ckpt["train_args"]["drop_neg_obj"] == 0.5
    partial = [p for p in weights.rglob("*") if p.is_file() and p not in {weights / "last.pt", weights / "best.pt"}]
    assert len(partial) == 1 and (partial[0].name.startswith(".") or partial[0].parent.name.startswith("."))
    assert partial[0].stat().st_size < len(good)  # the half-written file went to a hidden temporary path
