"""`yolo-partial export format=onnx`: the ONNX model computes what the PyTorch model computes, for yolov8n and yolo26n,
for a checkpoint trained with every method on, and it runs with only onnxruntime and numpy installed.

Untrained heads score every anchor near 0, which would make a score comparison vacuous: the class biases are spread
over [-4, 1] so that the scores range over roughly 0.02-0.7.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo_partial.cli import main

IMGSZ = 160
ANCHORS = (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2  # 525 anchor points at strides 8, 16, 32
TOL = 1e-3  # the bound on the largest absolute difference, for boxes (pixels) and scores alike


def spread_scores(yolo, seed: int = 0) -> None:
    """Draw every class bias of every classification branch (one-to-many and one-to-one) from U(-4, 1)."""
    head = yolo.model.model[-1]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for branch in (*head.cv3, *(getattr(head, "one2one_cv3", None) or ())):
            branch[-1].bias.copy_(torch.empty_like(branch[-1].bias).uniform_(-4.0, 1.0, generator=g))


def export(weights: Path, *keys: str) -> Path:
    assert main(["export", f"model={weights}", "format=onnx", f"imgsz={IMGSZ}", *keys]) == 0
    onnx = weights.with_suffix(".onnx")
    assert onnx.is_file()
    return onnx


def torch_output(weights: Path, image: torch.Tensor, end2end: bool = False) -> np.ndarray:
    """The checkpoint's eval-mode output in float32: (B, 4 + nc, anchors) decoded xywh pixels and sigmoid scores, or
    with `end2end` the NMS-free head's (B, max_det, 6) rows [x1, y1, x2, y2, score, class]."""
    from ultralytics import YOLO

    model = YOLO(weights).model.float().eval()
    model.end2end = end2end
    with torch.no_grad():
        out = model(image)
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


def onnx_output(onnx: Path, image: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: image.numpy()})
    return out


def random_image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed))


def assert_raw_parity(out: np.ndarray, ref: np.ndarray, nc: int) -> None:
    """Row-aligned comparison of the pre-NMS output: boxes (4 rows of xywh pixels) and class scores separately."""
    assert out.shape == ref.shape == (1, 4 + nc, ANCHORS)
    assert np.abs(out[:, :4] - ref[:, :4]).max() <= TOL
    assert np.abs(out[:, 4:] - ref[:, 4:]).max() <= TOL


@pytest.fixture(scope="module")
def spread_models(tmp_path_factory) -> dict[str, Path]:
    """yolov8n and yolo26n built from their YAMLs (80 classes), class biases spread, saved as checkpoints."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("export")
    weights = {}
    for name in ("yolov8n", "yolo26n"):
        yolo = YOLO(f"{name}.yaml")
        spread_scores(yolo)
        weights[name] = root / name / f"{name}.pt"
        weights[name].parent.mkdir()
        yolo.save(weights[name])
    return weights


@pytest.mark.parametrize("name", ["yolov8n", "yolo26n"])
def test_onnx_matches_pytorch_before_nms(spread_models, name):
    """Default export (Ultralytics' `nms` unset: NMS runs outside the graph) outputs the decoded pre-NMS predictions,
    for yolo26n those of its one-to-many branch, exactly what the PyTorch model returns in eval mode."""
    onnx = export(spread_models[name])
    image = random_image()
    ref = torch_output(spread_models[name], image)
    assert ref[:, 4:].max() > 0.5 and ref[:, 4:].min() < 0.05  # the scores are not all near 0
    assert_raw_parity(onnx_output(onnx, image), ref, nc=80)


def test_yolo26n_end2end_onnx_matches_pytorch(spread_models, tmp_path):
    """`nms=False` exports YOLO26's NMS-free head: (1, 300, 6) rows [x1, y1, x2, y2, score, class] after a top-k.

    Untrained weights give many exactly equal scores, whose order inside a top-k is arbitrary, so rows are not compared
    by position: every exported detection must be a PyTorch one (same class, box and score within the bound), and the
    exported scores must be PyTorch's 300 best (sorted, compared elementwise).
    """
    weights = tmp_path / "yolo26n.pt"
    shutil.copy(spread_models["yolo26n"], weights)
    onnx = export(weights, "nms=False")
    image = random_image(1)
    out, ref = onnx_output(onnx, image), torch_output(weights, image, end2end=True)
    assert out.shape == ref.shape == (1, 300, 6)
    assert np.abs(np.sort(out[0, :, 4]) - np.sort(ref[0, :, 4])).max() <= TOL
    for det in out[0]:
        same = ref[0, ref[0, :, 5] == det[5]]
        err = np.maximum(np.abs(same[:, :4] - det[:4]).max(1), np.abs(same[:, 4] - det[4]))
        assert err.min() <= TOL, det
    assert ref[0, :, 4].max() > 0.5


def test_checkpoint_trained_with_every_method_exports_like_stock(aquarium_small, tmp_path):
    """BPR + BRL + SCB under Co-mining for one epoch: the checkpoint is a stock DetectionModel with no criterion, and its
    export matches PyTorch like the untrained models'."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    assert main(["train", "model=yolo26n.yaml", f"data={aquarium_small}", "epochs=1", "imgsz=64", "batch=4",
                 "workers=0", "plots=False", "brl=True", "scb=True", "drop_neg_obj=0.5", "drop_neg_box=0.25",
                 "comining=True", f"project={tmp_path}", "name=all"]) == 0  # fmt: skip
    best = tmp_path / "all" / "weights" / "best.pt"
    model = YOLO(best).model
    assert type(model) is DetectionModel and getattr(model, "criterion", None) is None
    image = random_image(2)
    ref = torch_output(best, image)
    assert ref[:, 4:].max() > 1e-3  # trained one epoch: small but not vanishing scores
    out = onnx_output(export(best), image)
    assert_raw_parity(out, ref, nc=7)
    np.testing.assert_allclose(out[:, 4:], ref[:, 4:], rtol=1e-3, atol=1e-6)  # small scores: relative agreement too


ONNX_ONLY = """
import sys
BLOCKED = ("torch", "ultralytics", "yolo_partial")
for name in BLOCKED:
    sys.modules[name] = None  # any import of these packages, direct or from inside onnxruntime, now fails
import numpy as np
import onnxruntime as ort

onnx, image, ref = sys.argv[1:4]
sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
(out,) = sess.run(None, {sess.get_inputs()[0].name: np.load(image)})
ref = np.load(ref)
assert out.shape == ref.shape, (out.shape, ref.shape)
loaded = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod is not None)
assert not loaded, loaded
print("shape", out.shape, "maxdiff", float(np.abs(out - ref).max()))
"""


@pytest.mark.parametrize("name", ["yolov8n", "yolo26n"])
def test_onnx_runs_with_only_onnxruntime_and_numpy(spread_models, name, tmp_path):
    """A fresh isolated interpreter (-I: no PYTHONPATH, no user site) in which torch, ultralytics and yolo_partial
    cannot be imported runs the exported file and reproduces PyTorch's output computed here."""
    onnx = export(spread_models[name])
    image = random_image(3)
    np.save(tmp_path / "image.npy", image.numpy())
    np.save(tmp_path / "ref.npy", torch_output(spread_models[name], image))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    r = subprocess.run([sys.executable, "-I", "-c", ONNX_ONLY, str(onnx), str(tmp_path / "image.npy"),
                        str(tmp_path / "ref.npy")], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    shape, diff = r.stdout.split("maxdiff")
    assert shape.strip() == f"shape (1, 84, {ANCHORS})" and float(diff) <= TOL
