"""The tool's own missing-label loop as the benchmarks run it: `mine` a split with a trained model, optionally review
the candidates, `accept` them into a new dataset that a second round trains on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def mine_accept(work: Path, model: Path, data: Path, budget: dict, tag: str, precision: float | None = None,
                review: Callable[[Path, Path], None] | None = None, mine_opts: dict | None = None
                ) -> tuple[str, dict]:
    """(data YAML, figures of the mined list): `data` with `model`'s candidates accepted.

    The list is cut where its precision against `data`'s hidden manifest reaches `precision` (mine's default target
    when None); `mine_opts` are further keys of mine (e.g. uncertain). Without `review` every candidate is accepted;
    with it, `review(candidates_xml, reviewed_xml)` writes the reviewed file that `accept` reads. Both steps are
    skipped when their outputs exist under work/data/<tag> and work/data/accepted-<tag>, so an interrupted benchmark
    continues.
    """
    from yolo_partial.accept import run_accept
    from yolo_partial.mine import run_mine

    mined, out = work / "data" / tag, work / "data" / f"accepted-{tag}"
    if not (mined / "mine.json").is_file():
        run_mine({"model": str(model), "data": str(data), "out": str(mined), "imgsz": budget["imgsz"],
                  "device": budget["device"], **({"precision": precision} if precision is not None else {}),
                  **(mine_opts or {})})
    reviewed = mined / "candidates.xml"
    if review is not None:
        reviewed = work / "data" / f"{tag}-review.xml"
        review(mined / "candidates.xml", reviewed)
    if not (out / "data.yaml").is_file():
        run_accept({"data": str(data), "reviewed": str(reviewed), "mined": str(mined), "out": str(out)})
    record = json.loads((mined / "mine.json").read_text())
    figures = {f"mined {k}": record["calibration"][k] for k in ("threshold", "candidates", "precision", "recall")}
    if "uncertain" in record:  # mine uncertain=S: the band made ignore regions
        figures.update({f"ignored {k}": v for k, v in record["uncertain"].items() if k != "floor"})
    return str(out / "data.yaml"), figures
