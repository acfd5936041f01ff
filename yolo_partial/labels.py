"""The YOLO label and data-YAML formats as yolo-partial reads and writes them: one parser, one names check, one writer.

Every reader of label files (training pre-flight, split, hidden recall, the embedded dataset, mine, accept, merge)
goes through `read_label_file`, so a malformed line gets the same one-line error wherever it is found.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from .errors import PartialDataError

LABEL_FORMAT = "lines 'class cx cy w h' with an integer class in [0, nc) and coordinates in [0, 1]"
MANIFEST_FORMAT = "yolo-partial-manifest/1"  # hidden.json, accepted.json: boxes removed from or added to a dataset

Row = tuple[str, int, list[float]]  # (the line as written, class id, [cx, cy, w, h] normalised)


def line_problem(fields: list[str], nc: int) -> str | None:
    """What is wrong with the whitespace-split fields of one label line, or None when it is a valid box."""
    if len(fields) != 5:
        return f"has {len(fields)} fields, not 5"
    try:
        cls, *xywh = (float(f) for f in fields)
    except ValueError:
        return "has a non-numeric field"
    if not all(math.isfinite(v) for v in (cls, *xywh)):
        return "has a NaN or infinite number"
    if cls != int(cls):
        return f"has class {fields[0]}, not an integer"
    if not 0 <= cls < nc:
        return f"has class {fields[0]}, outside [0, {nc})"
    bad = [v for v in xywh if not 0.0 <= v <= 1.0]
    if bad:
        return f"has coordinate {bad[0]:g} outside [0, 1]"
    return None


def label_problem(lb_file: Path, nc: int) -> str | None:
    """The first problem of a YOLO detection label file ('line N ...'), or None when every line is valid."""
    for n, line in enumerate(Path(lb_file).read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = line.split()
        if fields and (problem := line_problem(fields, nc)):
            return f"line {n} {problem}"
    return None


def malformed(lb_file: str | Path, problem: str, nc: int | None = None, polygon: bool = False) -> PartialDataError:
    """The one-line error for a label file with `problem` (polygon lines get a hint)."""
    hint = "; polygon labels are not supported: convert them to boxes" if polygon else ""
    where = f" (nc={nc})" if nc is not None and nc < 1 << 30 else ""
    return PartialDataError(f"{lb_file}: malformed labels: {problem}; expected {LABEL_FORMAT}{where}{hint}")


def read_label_file(lb_file: str | Path, nc: int = 1 << 31) -> list[Row] | None:
    """The box lines of a YOLO label file, None when it does not exist, or a one-line error naming file and line.

    `nc` bounds the class ids; leave it out where the dataset's class count is not known (training checked it).
    """
    try:
        text = Path(lb_file).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise PartialDataError(f"{lb_file}: unreadable label file ({type(e).__name__}): expected UTF-8 text") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if problem := line_problem(fields, nc):
            raise malformed(lb_file, f"line {n} {problem}", nc, polygon=len(fields) > 5)
        rows.append((line, int(float(fields[0])), [float(v) for v in fields[1:]]))
    return rows


def class_names(yaml_path: str | Path, cfg: dict[str, Any]) -> dict[int, str]:
    """{class id: name} from a data YAML's names (list or mapping) or nc, or a one-line error naming the file."""
    names = cfg.get("names")
    if names is None and isinstance(cfg.get("nc"), int) and cfg["nc"] > 0:
        names = [f"class_{i}" for i in range(cfg["nc"])]
    if names is None:
        raise PartialDataError(f"{yaml_path}: missing 'names': expected a class list or an index: name mapping")
    if not names:  # Ultralytics would stop with a traceback
        raise PartialDataError(f"{yaml_path}: 'names' is empty: expected at least one class")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or sorted(names) != list(range(len(names))):
        raise PartialDataError(f"{yaml_path}: bad 'names': expected a class list or a mapping 0: name, 1: name, ...")
    if cfg.get("nc") is not None and cfg["nc"] != len(names):
        raise PartialDataError(
            f"{yaml_path}: nc: {cfg['nc']} but 'names' lists {len(names)} classes: expected them to agree (or no nc)")
    return {i: str(names[i]) for i in range(len(names))}


def data_yaml_text(fields: dict[str, Any], names: Sequence[str] | dict[int, str], header: str = "") -> str:
    """Ultralytics data YAML text: optional `# ` comment lines, `fields` (path, train, val, ...), nc and names.

    Values are written as JSON, which is valid YAML whatever characters a path or class name holds.
    """
    names = names if isinstance(names, dict) else dict(enumerate(names))
    lines = [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in fields.items()]
    lines += [f"nc: {len(names)}", "names:", *(f"  {i}: {json.dumps(n, ensure_ascii=False)}" for i, n in names.items())]
    return header + "\n".join(lines) + "\n"


def parse_xml(path: str | Path, expected: str, missing: str | None = None):
    """The root element of an annotation XML (VOC, CVAT), or a one-line PartialDataError naming the file: `missing` is
    the message for a file that does not exist (default: '<path>: not found'), `expected` names the format."""
    import xml.etree.ElementTree as ET

    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise PartialDataError(missing or f"{path}: not found: expected {expected}") from None
    except ET.ParseError as e:
        raise PartialDataError(f"{path}: malformed XML ({e}): expected {expected}") from None
    except OSError as e:
        raise PartialDataError(f"{path}: cannot read ({e.strerror or e}): expected a readable {expected}") from None
