"""The CLI and the Python API reject bad input with one line naming the key or file, before training."""

from pathlib import Path

import pytest

from conftest import one_line_error
from yolo_partial.cli import build_args, main
from yolo_partial.errors import PartialConfigError
from yolo_partial.keys import METHOD_DEFAULTS

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_help_and_no_args_print_usage(capsys):
    for argv in ([], ["help"]):
        rc, out, _ = run_cli(capsys, *argv)
        assert rc == 0
        assert out.startswith("Usage: yolo-partial MODE")
        for key in METHOD_DEFAULTS:
            assert f"  {key} " in out


@pytest.mark.parametrize(
    "arg, expect",
    [
        ("drop_neg_objj=0.5", "unknown key 'drop_neg_objj'; did you mean drop_neg_obj"),
        ("drop_neg_obj=1.5", "drop_neg_obj=1.5 is invalid: expected a number in [0, 1]"),
        ("drop_neg_box=-0.1", "drop_neg_box=-0.1 is invalid"),
        ("neg_iou=0", "neg_iou=0.0 is invalid: expected a number in (0, 1)"),
        ("neg_iou=1", "neg_iou=1.0 is invalid"),
        ("drop_mode=best", "drop_mode='best' is invalid: expected one of random|score"),
        ("brl_t=1.0", "brl_t=1.0 is invalid: expected a number in [0, 1)"),
        ("brl_iou=0", "brl_iou=0.0 is invalid"),
        ("brl_weight=-1", "brl_weight=-1.0 is invalid: expected a number >= 0"),
        ("scb_beta=0", "scb_beta=0.0 is invalid: expected a number > 0"),
        ("brl=maybe", "brl='maybe' is invalid: expected True or False"),
        ("epochs=abc", "epochs"),
        ("epochs", "'epochs' is not a key=value pair"),
    ],
)
def test_bad_keys_are_one_line_errors(capsys, arg, expect):
    assert expect in one_line_error(capsys, "train", arg)


def test_method_keys_are_training_keys_only(capsys):
    assert "unknown key 'drop_neg_obj'" in one_line_error(capsys, "val", "model=x.pt", "drop_neg_obj=0.5")


def test_unknown_mode(capsys):
    assert "unknown mode 'fit'" in one_line_error(capsys, "fit")


def test_cfg_file_merges_and_command_line_wins():
    args = build_args("train", ["cfg=cfg/bpr_obj.yaml", "drop_neg_obj=0.5", "epochs=3"])
    assert args["drop_neg_obj"] == 0.5 and args["neg_iou"] == 0.3 and args["epochs"] == 3
    assert "cfg" not in args
    both = build_args("train", [f"cfg={REPO / 'cfg' / 'bpr_both.yaml'}"])
    assert both["drop_neg_box"] == 0.25 and both["drop_neg_obj"] == 0.75


def test_shipped_cfgs_are_valid():
    expected = {"baseline": (0.0, 0.0), "bpr_box": (0.25, 0.0), "bpr_obj": (0.0, 0.75), "bpr_both": (0.25, 0.75)}
    for name, (box, obj) in expected.items():
        args = build_args("train", [f"cfg=cfg/{name}.yaml"])
        assert (args.get("drop_neg_box", 0.0), args.get("drop_neg_obj", 0.0)) == (box, obj)
    brl = build_args("train", ["cfg=cfg/brl.yaml"])
    assert brl["brl"] is True and (brl["brl_t"], brl["brl_weight"], brl["brl_iou"]) == (0.5, 0.1, 0.1)
    scb = build_args("train", ["cfg=cfg/scb.yaml"])
    assert scb["scb"] is True and (scb["scb_alpha"], scb["scb_beta"], scb["scb_box"]) == (1.0, 3.0, False)


def test_bad_cfg_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("drop_neg_obj: 0.5\nbogus_key: 1\n")
    line = one_line_error(capsys, "train", f"cfg={bad}")
    assert str(bad) in line and "unknown key 'bogus_key'" in line
    broken = tmp_path / "broken.yaml"
    broken.write_text("drop_neg_obj: [0.5\n")
    assert f"{broken}: unreadable cfg file" in one_line_error(capsys, "train", f"cfg={broken}")
    assert "cfg file not found" in one_line_error(capsys, "train", f"cfg={tmp_path / 'none.yaml'}")


def test_missing_data_yaml_and_image_folder(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert f"data YAML not found: {missing}" in one_line_error(capsys, "train", f"data={missing}")
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: [a]\n")
    line = one_line_error(capsys, "train", f"data={data}")
    assert f"train images not found at {tmp_path / 'images/train'}" in line


def _train_argv(data, tmp_path):
    return ["train", f"data={data}", "model=yolov8n.yaml", "epochs=1", "imgsz=64", "batch=2", "plots=False",
            f"project={tmp_path / 'runs'}", "name=bad"]  # fmt: skip


@pytest.mark.parametrize(
    "line, reason",
    [("0 0.5 0.5 0.2", "has 4 fields, not 5"), ("0 0.5 1.7 0.2 0.2", "coordinate 1.7 outside [0, 1]"),
     ("9 0.5 0.5 0.2 0.2", "class 9, outside [0, 7)"), ("0 nan 0.5 0.2 0.2", "NaN or infinite"),
     ("1.5 0.5 0.5 0.2 0.2", "class 1.5, not an integer")],  # fmt: skip
)
def test_malformed_label_names_the_file(aquarium_copy, tmp_path, capsys, line, reason):
    label = sorted((aquarium_copy.parent / "labels" / "train").iterdir())[1]
    label.write_text(label.read_text() + line + "\n")
    err = one_line_error(capsys, *_train_argv(aquarium_copy, tmp_path))
    assert f"{label}: malformed labels:" in err and reason in err and "expected lines 'class cx cy w h'" in err


def test_python_api_rejects_bad_method_values(aquarium_small):
    from yolo_partial import PartialDetectionTrainer

    with pytest.raises(PartialConfigError, match=r"drop_neg_obj=2.0 is invalid"):
        PartialDetectionTrainer(overrides={"data": str(aquarium_small), "drop_neg_obj": 2})


def test_val_reports_hidden_object_recall(tmp_path, capsys):
    """`val hidden=True` finds the manifest through the data YAML, prints the recall table and saves it as JSON."""
    import json

    from ultralytics import YOLO

    from yolo_partial.shapes import generate

    data = generate(tmp_path / "shapes", n_train=6, n_val=2)
    model = tmp_path / "untrained.pt"
    YOLO("yolov8n.yaml").save(model)
    rc, out, err = run_cli(capsys, "val", f"model={model}", f"data={data}", "hidden=True", "imgsz=64", "batch=2",
                           f"project={tmp_path}", "name=val", "plots=False")  # fmt: skip
    assert rc == 0, err
    manifest = json.loads((tmp_path / "shapes" / "hidden.json").read_text())
    saved = json.loads((tmp_path / "val" / "hidden_recall.json").read_text())
    assert saved["hidden_boxes"] == manifest["summary"]["removed"] > 0
    assert saved["images"] == len({e["image"] for e in manifest["removed"]})
    assert 0 <= saved["hidden_recall"] <= 1 and "Hidden" in out


def test_val_hidden_true_without_manifest_is_one_line(tmp_path, capsys):
    from ultralytics import YOLO

    from yolo_partial.shapes import generate

    generate(tmp_path / "shapes", n_train=2, n_val=2)
    model = tmp_path / "untrained.pt"
    YOLO("yolov8n.yaml").save(model)
    line = one_line_error(capsys, "val", f"model={model}", f"data={tmp_path / 'shapes' / 'full.yaml'}", "hidden=True",
                          "imgsz=64", f"project={tmp_path}", "name=val", "plots=False")  # fmt: skip
    assert "names no manifest" in line and "hidden=PATH" in line
