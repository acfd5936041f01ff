"""`yolo-partial reproduce table=...`: sweep one method knob with everything else fixed, then tabulate and plot.

Every row trains with the same model, seed, schedule and data and differs only in the table's knob. Each finished row is
saved as rows/<knob>=<value>.json (atomically), so a restarted sweep skips it; a row interrupted mid-training resumes
from its last.pt. Results are printed beside the papers' figures where a paper reports that row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER, SETTINGS

from .data import PartialDataError, load_yaml, resolve_data
from .fileio import write_text_atomic

METRICS = ("val mAP50", "val mAP50-95", "test mAP50", "test mAP50-95")


@dataclass(frozen=True)
class Table:
    """One reproducible table: the knob swept, its values, keys fixed for every row, the paper's figures (percent)."""

    knob: str
    values: tuple
    data: str  # default data YAML, relative to the repository's data/ folder
    paper: str  # where the figures come from
    fixed: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)  # knob value -> {metric column: value in percent}
    # control rows: (label, knob value, companion keys set for that row only), shown with their label
    controls: tuple = ()


def _map50(pairs: dict, cols=("val mAP50", "test mAP50")) -> dict:
    return {v: dict(zip(cols, f)) for v, f in pairs.items()}


TABLES = {
    "dusia-box": Table(
        "drop_neg_box", (0.0, 0.10, 0.25, 0.75, 0.90), "dusia.yaml",
        "Haque & McEver 2022, Table 2 (YOLOv5 on DUSIA)",
        # DUSIA's listed train frames all keep boxes after the crop: partial_empty changes nothing, stated for the record
        fixed={"partial_empty": False},
        figures=_map50({0.0: (59.0, 48.3), 0.10: (57.1, 48.2), 0.25: (58.1, 49.0), 0.75: (57.5, 47.5), 0.90: (58.1, 47.8)}),
    ),
    "dusia-obj": Table(
        "drop_neg_obj", (0.0, 0.10, 0.25, 0.75), "dusia.yaml",
        "Haque & McEver 2022, Table 3 (YOLOv5 on DUSIA)",
        fixed={"partial_empty": False},
        figures=_map50({0.0: (59.0, 48.3), 0.10: (57.7, 48.6), 0.25: (58.8, 48.3), 0.75: (59.6, 49.8)}),
    ),
    "brl-t": Table(
        "brl_t", (0.0, 0.10, 0.25, 0.50), "voc-extreme.yaml",
        "Zhang et al. 2020, Table 3 left (RetinaNet, VOC extreme, scale 0.5; VOC2007 test)",
        # the paper's base: its RetinaNet baseline is focal loss, the "focal only" row (t=0, weight 1) is that baseline
        fixed={"brl": True, "brl_weight": 0.5, "brl_base": "focal"},
        figures=_map50({0.0: (62.1,), 0.10: (61.7,), 0.25: (62.0,), 0.50: (62.9,)}, ("val mAP50",)),
        controls=(("focal only", 0.0, {"brl_weight": 1.0}),),
    ),
    "brl-weight": Table(
        "brl_weight", (1.0, 0.5, 0.25, 0.1, 0.01), "voc-extreme.yaml",
        "Zhang et al. 2020, Table 3 right (RetinaNet, VOC extreme, t=0.5; VOC2007 test)",
        fixed={"brl": True, "brl_t": 0.5, "brl_base": "focal"},
        figures=_map50({1.0: (60.8,), 0.5: (62.9,), 0.25: (65.1,), 0.1: (66.1,), 0.01: (63.1,)}, ("val mAP50",)),
        controls=(("focal only", 1.0, {"brl_t": 0.0}),),
    ),
    "comining": Table(
        "comining", (False, True), "coco-hard.yaml",
        "Wang et al. 2021, Table 1 (RetinaNet, COCO hard; AP = mAP50-95 on minival)",
        figures={False: {"val mAP50-95": 30.4}, True: {"val mAP50-95": 31.8}},
    ),
}


def run_reproduce(args: dict[str, Any]) -> Path:
    """CLI entry: `table=` picks the sweep, `values=` optionally overrides the knob's values, other keys train each row.

    Returns the sweep folder, holding table.csv, table.md, table.png and one folder per row.
    """
    from .errors import PartialConfigError

    table_name = args.pop("table", None)
    if table_name not in TABLES:
        raise PartialConfigError(f"table={table_name!r} is invalid: expected one of {'|'.join(TABLES)}")
    table = TABLES[table_name]
    if table.knob in args:
        raise PartialConfigError(f"{table.knob}= cannot be set: it is the knob that table={table_name} sweeps")
    values = _parse_values(args.pop("values", None), table)
    data = args.pop("data", None) or table.data  # a shipped data YAML's name
    project = Path(args.pop("project", None) or Path(SETTINGS["runs_dir"]) / "reproduce")
    sweep = project / str(args.pop("name", None) or table_name)
    train = {**table.fixed, **args, "data": resolve_data(data)}
    train.setdefault("model", "yolov8n.yaml")
    train.setdefault("seed", 0)
    rows = [run_row(sweep, table, v, train) for v in values]
    rows += [{**run_row(sweep, table, v, {**train, **extra}, extra), "label": label} for label, v, extra in table.controls]
    return write_table(sweep, table_name, table, rows)


def _parse_values(raw: Any, table: Table) -> tuple:
    """Knob values from `values=0,0.25` (or a single number), typed like the knob; the table's own by default."""
    from .keys import coerce

    if raw is None:
        return table.values
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    return tuple(coerce(table.knob, _typed(x)) for x in items if str(x).strip())


def _typed(x: Any) -> Any:
    from ultralytics.cfg import smart_value

    return smart_value(str(x).strip())


def _slug(knob: str, value: Any) -> str:
    return f"{knob}={value:g}" if isinstance(value, float) else f"{knob}={value}"


def run_row(sweep: Path, table: Table, value: Any, train: dict[str, Any], extra: dict | None = None) -> dict[str, Any]:
    """Train and evaluate one row unless its result file already exists with the same settings -> its result.
    `extra` names a control row's companion keys (part of its folder name)."""
    slug = ",".join([_slug(table.knob, value), *(_slug(k, v) for k, v in (extra or {}).items())])
    done = sweep / "rows" / f"{slug}.json"
    settings = {**train, table.knob: value}
    if done.is_file():
        row = json.loads(done.read_text())
        if row["settings"] == json.loads(json.dumps(settings)):
            LOGGER.info(f"reproduce: {slug} finished earlier, reusing {done}")
            return row
        raise PartialDataError(
            f"{done}: this row was trained with other settings; expected {settings}: use name= for a new sweep"
        )
    best = train_row(sweep, slug, settings)
    row = {"knob": table.knob, "value": value, "settings": settings, "weights": str(best), **evaluate(best, train)}
    done.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(done, json.dumps(row, indent=1))
    return row


def train_row(sweep: Path, slug: str, settings: dict[str, Any]) -> Path:
    """Train one row into sweep/slug (resuming an interrupted one) -> its best.pt."""
    from ultralytics import YOLO

    from .models import resolve_model
    from .trainer import PartialDetectionTrainer

    run_dir = sweep / slug
    last = run_dir / "weights" / "last.pt"
    if last.is_file():
        LOGGER.info(f"reproduce: resuming {slug} from {last}")
        YOLO(str(last)).train(trainer=PartialDetectionTrainer, resume=True)
    else:
        kw = {k: v for k, v in settings.items() if k != "model"}
        yolo = YOLO(resolve_model(settings["model"]))  # shipped model YAMLs (yolov5n-obj.yaml) by name
        yolo.train(trainer=PartialDetectionTrainer, project=str(sweep), name=slug, exist_ok=True, **kw)
    return run_dir / "weights" / "best.pt"


def evaluate(best: Path, train: dict[str, Any]) -> dict[str, float]:
    """Val and test mAP50 / mAP50-95 of best.pt in percent (test NaN when the data has no test split), plus
    hidden-object recall when the data YAML names a manifest."""
    from ultralytics import YOLO

    from .hidden import find_manifest, hidden_recall, load_manifest

    data = train["data"]
    out = dict.fromkeys(METRICS, math.nan)
    kw = {k: train[k] for k in ("imgsz", "batch", "device") if k in train}
    splits = ("val", "test") if "test" in load_yaml(data, "data YAML") else ("val",)
    for split in splits:
        m = YOLO(str(best)).val(data=data, split=split, plots=False, verbose=False, **kw)
        out[f"{split} mAP50"], out[f"{split} mAP50-95"] = 100 * m.box.map50, 100 * m.box.map
    manifest = find_manifest(data)
    if manifest is not None:
        r = hidden_recall(YOLO(str(best)), load_manifest(manifest), **kw)
        out["hidden recall"], out["hidden score"] = 100 * r["hidden_recall"], 100 * r["hidden_score"]
        out["hidden AP50"] = 100 * r["hidden_ap"]
    return out


def write_table(sweep: Path, name: str, table: Table, rows: list[dict[str, Any]]) -> Path:
    """Write table.csv, table.md (ours beside the paper's figures) and table.png (mAP against the knob)."""
    import pandas as pd

    records = []
    for r in rows:
        rec = {"row": r.get("label", ""), table.knob: r["value"],
               **{k: r[k] for k in r if k in METRICS or k.startswith("hidden")}}
        if "label" not in r:  # a control row is no row of the paper's table
            rec.update({f"paper {k}": v for k, v in table.figures.get(r["value"], {}).items()})
        records.append(rec)
    df = pd.DataFrame.from_records(records).dropna(axis=1, how="all")
    if not df["row"].astype(bool).any():
        df = df.drop(columns="row")
    write_text_atomic(sweep / "table.csv", df.to_csv(index=False))
    shown = df.map(lambda v: "–" if isinstance(v, float) and math.isnan(v) else f"{v:.1f}" if isinstance(v, float) else v)
    shown[table.knob] = df[table.knob].map(str)  # the knob as given: 0.75, not 0.8
    text = shown.to_markdown(index=False, disable_numparse=True)
    fixed = ", ".join(f"{k}={v}" for k, v in table.fixed.items()) or "none"
    md = (f"# reproduce table={name}\n\nmAP, hidden recall, hidden score and hidden AP50 in percent; paper figures: "
          f"{table.paper}. Keys fixed for every row: {fixed}.\n\n")
    write_text_atomic(sweep / "table.md", md + text + "\n")
    plot_table(df[df["row"] == ""] if "row" in df else df, table.knob, sweep / "table.png")
    LOGGER.info(f"\n{text}\nreproduce: results saved to {sweep}")
    return sweep


def plot_table(df, knob: str, path: Path) -> None:
    """mAP columns (ours solid, the paper's dashed) against the knob value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), tight_layout=True)
    x = [float(v) for v in df[knob]]
    for col in (c for c in df.columns if "mAP" in c):
        ax.plot(x, df[col], "--o" if col.startswith("paper") else "-o", label=col)
    ax.set(xlabel=knob, ylabel="mAP (%)")
    ax.legend(fontsize=8)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=150)
    plt.close(fig)
    tmp.replace(path)
