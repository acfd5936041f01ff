"""End to end: train with BPR on real images, load the checkpoints in stock Ultralytics, resume, stay offline."""

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yolo_partial import PartialDetectionTrainer
from yolo_partial.losses import PartialDetectionLoss

TINY = dict(epochs=1, imgsz=64, batch=4, workers=0, plots=False, val=True, amp=False, verbose=False)


def tree_digest(root: Path) -> str:
    """Hash of every image and label file under root (Ultralytics' *.cache files excluded)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix != ".cache":
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def train(model, data, project, name, **kw):
    from ultralytics import YOLO

    yolo = YOLO(model)
    yolo.train(trainer=PartialDetectionTrainer, data=str(data), project=str(project), name=name, exist_ok=True,
               **{**TINY, **kw})  # fmt: skip
    return yolo.trainer


@pytest.fixture(scope="module")
def bpr_run(aquarium_small, tmp_path_factory):
    before = tree_digest(aquarium_small.parent)
    trainer = train("yolov8n.yaml", aquarium_small, tmp_path_factory.mktemp("runs"), "bpr",
                    drop_neg_obj=0.75, drop_neg_box=0.25)  # fmt: skip
    return trainer, before


def test_bpr_trains_and_logs_drop_counts(bpr_run, aquarium_small):
    trainer, before = bpr_run
    import pandas as pd

    df = pd.read_csv(trainer.csv)
    assert {"train/box_drop", "train/obj_drop", "train/box_loss", "metrics/mAP50(B)"} <= set(df.columns)
    assert len(df) == 1 and df["train/obj_drop"].iloc[0] > 0
    crit = trainer.model.criterion
    assert isinstance(crit, PartialDetectionLoss) and crit.method("bpr").drop_obj == 0.75 and crit.method("bpr").drop_box == 0.25
    assert (trainer.save_dir / "results.png").exists() or not trainer.args.plots
    assert tree_digest(aquarium_small.parent) == before, "the source dataset was modified"


def test_progress_header_fits_every_column_the_bar_shows(bpr_run):
    trainer, _ = bpr_run
    header = trainer.progress_string().split()
    assert header == ["Epoch", "GPU_mem", *trainer.tloss, "Instances", "Size"]  # the bar prints all of tloss
    assert {"box_drop", "obj_drop"} <= set(header)
    kept, trainer.loss_names = trainer.loss_names, ("box_loss", "teacher_hidden", "teacher_covered", "pseudo_share")
    line = trainer.progress_string()
    trainer.loss_names = kept
    assert line.split() == ["Epoch", "GPU_mem", "box_loss", "t_hidden", "t_covered", "p_share", "Instances", "Size"]
    assert all(len(line[1 + 11 * i: 12 + 11 * i]) == 11 and line[1 + 11 * i] == " " for i in range(8))


STOCK_LOAD = """
import sys
sys.modules["yolo_partial"] = None  # a checkpoint that needs yolo_partial would fail to unpickle here
try:
    import yolo_partial
    raise SystemExit("yolo_partial importable")
except ImportError:
    pass
from ultralytics import YOLO
for ckpt in sys.argv[2:]:
    m = YOLO(ckpt)
    r = m.predict(sys.argv[1], imgsz=64, verbose=False)
    assert type(m.model).__module__.startswith("ultralytics."), type(m.model)
    print("loaded", ckpt, len(r))
"""


def load_in_stock_ultralytics(weights: list[Path], image: Path) -> str:
    env = {**os.environ, "ULTRALYTICS_SAFE_LOAD": "1"}
    out = subprocess.run([sys.executable, "-c", STOCK_LOAD, str(image), *map(str, weights)], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_checkpoints_load_in_stock_ultralytics(bpr_run, aquarium_small):
    trainer, _ = bpr_run
    image = next((aquarium_small.parent / "images" / "val").iterdir())
    out = load_in_stock_ultralytics([trainer.best, trainer.last], image)
    assert out.count("loaded") == 2


class StopAfterFirstEpoch(Exception):
    pass


def test_resume_restores_method_keys_and_loss(aquarium_small, tmp_path):
    """yolo26n (end-to-end head, whose criterion Ultralytics rebuilds on resume): stop after epoch 1 of 2, resume."""
    from ultralytics import YOLO

    yolo = YOLO("yolo26n.yaml")

    def stop(trainer):
        raise StopAfterFirstEpoch

    yolo.add_callback("on_fit_epoch_end", stop)
    with pytest.raises(StopAfterFirstEpoch):
        yolo.train(trainer=PartialDetectionTrainer, data=str(aquarium_small), project=str(tmp_path), name="r",
                   **{**TINY, "epochs": 2}, drop_neg_obj=0.5, drop_mode="score")  # fmt: skip
    last = tmp_path / "r" / "weights" / "last.pt"
    assert last.exists()

    resumed = YOLO(last)
    resumed.train(trainer=PartialDetectionTrainer, resume=True)
    t = resumed.trainer
    assert t.start_epoch == 1 and t.args.drop_neg_obj == 0.5 and t.args.drop_mode == "score"
    crit = t.model.criterion
    for branch in (crit.one2many, crit.one2one):
        assert isinstance(branch, PartialDetectionLoss) and branch.method("bpr").drop_obj == 0.5 and branch.method("bpr").mode == "score"
    assert crit.updates == 2  # the one-to-many/one-to-one schedule continued: one update per finished epoch
    import pandas as pd

    assert list(pd.read_csv(t.csv)["epoch"]) == [1, 2]


def test_no_network_in_train_val_predict_export(aquarium_small, tmp_path, monkeypatch):
    """Every socket connection or DNS lookup is refused and counted; none may be attempted."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    from yolo_partial.cli import main

    common = [f"project={tmp_path}", "exist_ok=True", "imgsz=64"]
    assert main(["train", f"data={aquarium_small}", "cfg=cfg/bpr_obj.yaml", "epochs=1", "batch=4", "plots=True",
                 "name=off", *common]) == 0  # fmt: skip
    best = tmp_path / "off" / "weights" / "best.pt"
    assert main(["val", f"model={best}", f"data={aquarium_small}", "name=val", *common]) == 0
    src = aquarium_small.parent / "images" / "val"
    assert main(["predict", f"model={best}", f"source={src}", "name=pred", *common]) == 0
    assert main(["export", f"model={best}", "format=onnx", *common]) == 0
    assert best.with_suffix(".onnx").exists()
    assert attempts == []


def test_ddp_worker_construction_path(bpr_run, tmp_path):
    """Rebuild the trainer as Ultralytics' DDP worker does: cloudpickled class/args, plain default cfg + overrides."""
    import cloudpickle
    from ultralytics.utils import DEFAULT_CFG_DICT

    trainer, _ = bpr_run
    state = cloudpickle.loads(cloudpickle.dumps({"trainer": type(trainer), "args": vars(trainer.args)}))
    args = {**state["args"], "save_dir": str(tmp_path / "ddp"), "resume": False, "epochs": 1}
    cfg = DEFAULT_CFG_DICT.copy()
    cfg.update(save_dir="")
    worker = state["trainer"](cfg=cfg, overrides=args)
    assert worker.args.drop_neg_obj == 0.75 and worker.args.drop_neg_box == 0.25
    worker.train()
    assert isinstance(worker.model.criterion, PartialDetectionLoss)
    assert worker.model.criterion.method("bpr").drop_obj == 0.75
    assert torch.isfinite(worker.loss)


def test_ddp_worker_file_generated_by_ultralytics(bpr_run, tmp_path):
    """Ultralytics' own DDP worker file, run as a single CPU worker: the trainer class, args, model and callbacks go
    through cloudpickle, the trainer is rebuilt from the plain default cfg with the saved args as overrides, and it
    trains with the partial loss; a callback added before launch runs in the worker."""
    import json
    from copy import copy

    from ultralytics.utils.dist import generate_ddp_file

    trainer, _ = bpr_run
    launcher = copy(trainer)  # what Model.train hands to the DDP launcher: fresh model, run args, callbacks
    launcher.args = copy(trainer.args)
    vars(launcher.args).update(save_dir=str(tmp_path / "ddp"), epochs=1, resume=False)
    launcher.model = trainer.get_model(cfg=trainer.args.model, verbose=False)
    report = tmp_path / "worker.json"

    def on_train_end(t):  # defined here, so cloudpickle ships it by value
        crit = t.model.criterion
        report.write_text(json.dumps({"criterion": type(crit).__name__, "drop_obj": crit.method("bpr").drop_obj,
                                      "drop_box": crit.method("bpr").drop_box, "pid": os.getpid()}))  # fmt: skip

    launcher.callbacks = {k: [*v, on_train_end] if k == "on_train_end" else list(v) for k, v in trainer.callbacks.items()}
    worker = Path(generate_ddp_file(launcher))
    try:
        r = subprocess.run([sys.executable, str(worker)], capture_output=True, text=True, timeout=300)
    finally:
        worker.unlink()
        worker.with_suffix(".pt").unlink()
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(report.read_text())
    assert seen["pid"] != os.getpid() and seen["criterion"] == "PartialDetectionLoss"
    assert (seen["drop_obj"], seen["drop_box"]) == (0.75, 0.25)
    import pandas as pd

    assert pd.read_csv(tmp_path / "ddp" / "results.csv")["train/obj_drop"].iloc[0] > 0


def test_all_methods_compose_in_training(aquarium_small, tmp_path):
    """BRL + SCB + BPR together train end to end on the end-to-end head and log their counts."""
    import pandas as pd

    t = train("yolo26n.yaml", aquarium_small, tmp_path, "all", brl=True, scb=True, scb_box=True,
              drop_neg_obj=0.75, drop_neg_box=0.25)  # fmt: skip
    df = pd.read_csv(t.csv)
    assert {"train/brl_conf", "train/brl_recal", "train/box_drop", "train/obj_drop"} <= set(df.columns)
    assert df["train/brl_conf"].iloc[0] > 0 and torch.isfinite(t.loss)
    branch = t.model.criterion.one2many
    assert branch.method("brl") is not None and branch.method("scb") is not None and branch.method("scb").box and branch.method("bpr") is not None


def test_cli_trains_on_embedded_dataset_by_default(tmp_path, monkeypatch):
    """`yolo-partial train cfg=...` with no data= trains on the generated shapes dataset at its native 160 px."""
    from yolo_partial.cli import main

    monkeypatch.chdir(tmp_path)  # cfg/ is then found in the repository by name
    assert main(["train", "cfg=cfg/bpr_obj.yaml", "epochs=1", "fraction=0.05", "batch=8", "plots=False",
                 f"project={tmp_path}", "name=default"]) == 0  # fmt: skip
    args = (tmp_path / "default" / "args.yaml").read_text()
    assert "shapes-v2" in args and "imgsz: 160" in args and "drop_neg_obj: 0.75" in args
    assert (tmp_path / "default" / "weights" / "best.pt").exists()


@pytest.fixture(scope="module")
def comining_run(tmp_path_factory):
    """Co-mining on the generated shapes dataset, whose partial YAML names its hidden-box manifest."""
    from yolo_partial import shapes

    data = shapes.generate(tmp_path_factory.mktemp("shapes") / "s", n_train=12, n_val=4)
    # a near-zero score threshold, so that the untrained model does produce pseudo boxes
    return train("yolov8n.yaml", data, tmp_path_factory.mktemp("runs"), "cm", comining=True, cm_score=1e-4), data


def test_comining_trains_logs_and_stays_stock_loadable(comining_run):
    import pandas as pd

    from yolo_partial.hidden_labels import HiddenBoxesDataset
    from yolo_partial.losses import CoMiningLoss

    trainer, data = comining_run
    df = pd.read_csv(trainer.csv)
    assert df["train/pseudo_n"].iloc[0] > 0 and 0 <= df["train/pseudo_hit"].iloc[0] <= df["train/pseudo_n"].iloc[0]
    share = df["train/pseudo_hit"].iloc[0] / df["train/pseudo_n"].iloc[0]
    assert df["train/pseudo_share"].iloc[0] == pytest.approx(share, rel=1e-4)  # results.csv rounds to 5 digits
    assert df["val/pseudo_n"].iloc[0] == 0 and df["train/nonfinite_skipped"].iloc[0] == 0
    assert isinstance(trainer.model.criterion, CoMiningLoss) and trainer.model.criterion.hidden
    dataset = trainer.train_loader.dataset
    assert type(dataset) is HiddenBoxesDataset and max(lb["cls"].max() for lb in dataset.labels) < len(trainer.data["names"])
    image = next((data.parent / "partial" / "images" / "val").iterdir())
    assert load_in_stock_ultralytics([trainer.best, trainer.last], image).count("loaded") == 2


def test_ddp_worker_construction_comining_with_all_policies(comining_run, tmp_path):
    """The DDP worker's construction path with Co-mining around BRL + SCB + BPR on YOLO26's end-to-end head."""
    import cloudpickle
    from ultralytics.utils import DEFAULT_CFG_DICT
    from ultralytics.utils.loss import E2ELoss

    from yolo_partial.losses import CoMiningLoss

    trainer, _ = comining_run
    state = cloudpickle.loads(cloudpickle.dumps({"trainer": type(trainer), "args": vars(trainer.args)}))
    args = {**state["args"], "save_dir": str(tmp_path / "ddp"), "resume": False, "epochs": 1, "model": "yolo26n.yaml",
            "brl": True, "scb": True, "drop_neg_obj": 0.5, "cm_score": 0.6}  # fmt: skip
    cfg = DEFAULT_CFG_DICT.copy()
    cfg.update(save_dir="")
    worker = state["trainer"](cfg=cfg, overrides=args)
    worker.train()
    crit = worker.model.criterion
    assert isinstance(crit, CoMiningLoss) and isinstance(crit.base, E2ELoss) and crit.score == 0.6
    assert crit.base.one2one.method("brl") and crit.base.one2one.method("scb") and crit.base.one2one.method("bpr")
    assert list(worker.loss_items) == ["box_loss", "cls_loss", "l1_loss", "brl_conf", "brl_recal", "box_drop",
                                       "obj_drop", "pseudo_n", "pseudo_hit"]  # fmt: skip
    assert torch.isfinite(worker.loss) and crit.base.updates == 1  # the trainer advanced E2ELoss's schedule


def test_coco_pretrained_weights_on_a_coco_split_warn_once(monkeypatch):
    """Weights whose training args name COCO, on a dataset with a manifest and COCO's 80 names: one warning."""
    from types import SimpleNamespace

    from ultralytics.utils import LOGGER

    from yolo_partial.trainer import warn_pretraining_leak

    coco = {i: f"c{i}" for i in range(80)}
    weights = SimpleNamespace(args={"data": "coco.yaml"}, names=coco)
    seen = []
    monkeypatch.setattr(LOGGER, "warning", seen.append)
    assert warn_pretraining_leak(weights, {"names": coco}, "hidden.json") and len(seen) == 1
    assert "pretrained on COCO" in seen[0]
    assert not warn_pretraining_leak(weights, {"names": coco}, None)  # not a partial split
    assert not warn_pretraining_leak(SimpleNamespace(args={"data": "voc.yaml"}, names=coco), {"names": coco}, "h")
    assert not warn_pretraining_leak(None, {"names": coco}, "hidden.json")  # from scratch
    assert len(seen) == 1
