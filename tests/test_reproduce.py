"""`reproduce`: rows differ only in the knob, the table sits beside the paper's figures, finished rows are reused."""

import json

import pandas as pd
import pytest

from yolo_partial import reproduce
from yolo_partial.errors import PartialDataError
from yolo_partial.errors import PartialConfigError
from yolo_partial.split import split_dataset

TINY = {"epochs": 1, "imgsz": 64, "batch": 4, "plots": False, "workers": 0}


@pytest.fixture(scope="module")
def sweep(aquarium_small, tmp_path_factory):
    """A two-row dusia-box sweep on a hard split of a few Aquarium images."""
    root = tmp_path_factory.mktemp("reproduce")
    data = split_dataset(aquarium_small, mode="hard", seed=0, out=root / "aq-hard")
    args = {"table": "dusia-box", "data": str(data), "values": "0,0.25", "project": str(root), "name": "box", **TINY}
    return reproduce.run_reproduce(dict(args)), args


def test_rows_differ_only_in_the_knob(sweep):
    folder, _ = sweep
    rows = [json.loads((folder / "rows" / f"drop_neg_box={v}.json").read_text()) for v in ("0", "0.25")]
    a, b = (dict(r["settings"]) for r in rows)
    assert (a.pop("drop_neg_box"), b.pop("drop_neg_box")) == (0.0, 0.25) and a == b and a["seed"] == 0
    for row, v in zip(rows, ("0", "0.25")):
        saved = (folder / f"drop_neg_box={v}" / "args.yaml").read_text()
        assert f"drop_neg_box: {float(v)}" in saved  # the knob reached the trainer


def test_table_has_ours_beside_the_paper(sweep):
    folder, _ = sweep
    df = pd.read_csv(folder / "table.csv")
    assert df["drop_neg_box"].tolist() == [0.0, 0.25]
    assert df["paper val mAP50"].tolist() == [59.0, 58.1] and df["paper test mAP50"].tolist() == [48.3, 49.0]
    assert df["val mAP50"].between(0, 100).all() and "test mAP50" not in df  # the split has no test images
    assert df["hidden recall"].between(0, 100).all()  # the split's manifest is found through its data YAML
    md = (folder / "table.md").read_text()
    assert "| 0.25 " in md and "Table 2" in md
    assert (folder / "table.png").stat().st_size > 1000


def test_restart_reuses_finished_rows(sweep, monkeypatch):
    folder, args = sweep
    before = (folder / "rows" / "drop_neg_box=0.25.json").read_text()
    monkeypatch.setattr(reproduce, "train_row", lambda *a: pytest.fail("a finished row was trained again"))
    assert reproduce.run_reproduce(dict(args)) == folder
    assert (folder / "rows" / "drop_neg_box=0.25.json").read_text() == before


def test_changed_settings_are_not_mixed_into_a_sweep(sweep):
    _, args = sweep
    with pytest.raises(PartialDataError, match="trained with other settings"):
        reproduce.run_reproduce({**args, "lr0": 0.02})


@pytest.mark.parametrize(
    "args, match",
    [({"table": "nope"}, "table='nope' is invalid"), ({"table": "dusia-obj", "drop_neg_obj": 0.5}, "knob"),
     ({"table": "brl-t", "values": "0.5,2"}, "brl_t=2")],  # fmt: skip
)
def test_bad_reproduce_arguments(args, match):
    with pytest.raises(PartialConfigError, match=match):
        reproduce.run_reproduce(dict(args))


def test_brl_table_has_a_focal_only_control_row(aquarium_small, tmp_path):
    """brl-weight states its base and adds the paper's baseline as a control row: focal loss alone (t=0, weight 1)."""
    data = split_dataset(aquarium_small, mode="hard", seed=0, out=tmp_path / "aq-hard")
    folder = reproduce.run_reproduce({"table": "brl-weight", "data": str(data), "values": "0.1", "project": str(tmp_path),
                                      "name": "w", **TINY})
    control = json.loads((folder / "rows" / "brl_weight=1,brl_t=0.json").read_text())
    assert control["settings"]["brl_t"] == 0.0 and control["settings"]["brl_weight"] == 1.0
    assert control["settings"]["brl_base"] == "focal"
    table = pd.read_csv(folder / "table.csv")
    assert table["row"].fillna("").tolist() == ["", "focal only"]
    md = (folder / "table.md").read_text()
    assert "brl_base=focal" in md and "focal only" in md
