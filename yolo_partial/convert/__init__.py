"""`yolo-partial convert dusia|voc|coco|lvis`: public datasets -> Ultralytics YOLO layout, with counts of what was kept.

Every converter writes `out/images/<split>/`, `out/labels/<split>/` and `out/data.yaml` (no `path:` key, so the folder
works wherever it lies) through `fileio.atomic_dir`: a failed run leaves no output and no temporary folder behind.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..errors import PartialDataError

USAGE = """Usage: yolo-partial convert KIND key=value ...

  yolo-partial convert dusia annotations=DIR lists=DIR [videos=DIR] out=DIR
      DUSIA CVAT-for-video XMLs (annotations=.../cvat_annos) and frame lists (lists=.../idd_lsts); with videos=
      (<video>.mp4) the listed frames are extracted and cropped, else out/to_extract/<split>.txt lists them.
  yolo-partial convert voc root=VOCdevkit out=DIR
      train = VOC2007 + VOC2012 trainval (the years present), test = VOC2007 test; difficult objects kept.
  yolo-partial convert coco annotations=instances_SPLIT.json images=DIR out=DIR [crowd=skip|keep|ignore]
      one split per call (its name from the JSON file name); repeat with the other JSON files to fill the same out.
      crowd=ignore writes crowd regions as ignore boxes into out/partial.json.
  yolo-partial convert lvis annotations=lvis_v1_SPLIT.json images=COCO_IMAGES_ROOT out=DIR
      one split per call; images= holds train2017/ and val2017/ (LVIS names images by coco_url); out/partial.json
      gets each image's labelled classes (boxed minus not exhaustive) and verified negatives.
"""

# kind -> (required keys, optional keys); values are the converter function's arguments
CONVERTERS = {
    "dusia": (("annotations", "lists", "out"), ("videos",)),
    "voc": (("root", "out"), ()),
    "coco": (("annotations", "images", "out"), ("crowd",)),
    "lvis": (("annotations", "images", "out"), ()),
}


def run_convert(kind: str | None, args: dict[str, Any]) -> dict | None:
    """Check the keys of one `convert KIND` command and run its converter -> its summary (None for help)."""
    from ..keys import check_known_keys

    if kind in (None, "help"):
        print(USAGE)
        return None
    if kind not in CONVERTERS:
        raise PartialDataError(f"unknown converter '{kind}': expected one of {'|'.join(CONVERTERS)}")
    required, optional = CONVERTERS[kind]
    check_known_keys(args, set(required) | set(optional))
    missing = [k for k in required if args.get(k) in (None, "")]
    if missing:
        keys = " ".join(f"{k}=..." for k in missing)
        raise PartialDataError(f"convert {kind} needs {keys}: see 'yolo-partial convert help'")
    convert = getattr(import_module(f"{__name__}.{kind}"), f"convert_{kind}")
    try:
        return convert(**{k: v if v is None else str(v) for k, v in args.items()})
    except OSError as e:  # unwritable out=, disk full, unreadable file: the system's one-line reason names the path
        raise PartialDataError(str(e)) from None


def yolo_line(cls: int, box: tuple[float, float, float, float], size: tuple[float, float]) -> str | None:
    """A YOLO label line for pixel box (x1, y1, x2, y2) clipped to an image of size (w, h), or None if nothing is left.

    Widths and heights that round to 0 at the written precision count as nothing left, so no zero-size box is written.
    """
    w, h = size
    x1, x2 = min(max(box[0], 0.0), w), min(max(box[2], 0.0), w)
    y1, y2 = min(max(box[1], 0.0), h), min(max(box[3], 0.0), h)
    bw, bh = round((x2 - x1) / w, 6), round((y2 - y1) / h, 6)
    if bw <= 0 or bh <= 0:
        return None
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {bw:.6f} {bh:.6f}"


def format_table(rows: dict[str, dict[str, Any]], columns: list[str]) -> str:
    """Format {row name: {column: int|float}} as aligned text, one line per row under a header of column names."""
    width = max(map(len, rows), default=0)
    sizes = [max(len(c) + 2, 8) for c in columns]
    lines = [" " * width + "".join(f"{c:>{n}}" for c, n in zip(columns, sizes))]
    for name, row in rows.items():
        cells = (
            f"{row.get(c, 0):>{n}.2f}" if isinstance(row.get(c), float) else f"{row.get(c, 0):>{n}}"
            for c, n in zip(columns, sizes)
        )
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)
