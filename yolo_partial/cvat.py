"""CVAT for images 1.1 XML: the writer used by `mine` and the reader used by `accept` (and the tests).

CVAT's "CVAT for images 1.1" format holds one `<image>` per frame, named as the uploaded image file (which is how CVAT
matches an imported annotation file to the task's images), with its shapes as children. Only `<box>` shapes are
detection boxes; other shapes (polygons, points, tags) are counted and ignored by the reader. Box coordinates are
pixels (`xtl ytl xbr ybr`); CVAT itself writes them with 2 decimals, so `write_cvat_images` rounds to 0.01 px too and
a box read back is exactly the box written. The DUSIA converter reads the other CVAT format, CVAT for video 1.1
(`<track>` elements), which this reader refuses with a one-line error.

Layout written (and the subset the reader needs):

    <annotations>
      <version>1.1</version>
      <meta><task>... <labels><label><name/><color/><type/><attributes><attribute>...</attribute></attributes></label>
      </labels></task></meta>
      <image id="0" name="a.jpg" width="640" height="480">
        <box label="fish" source="manual" occluded="0" xtl="1.00" ytl="2.00" xbr="30.50" ybr="40.25" z_order="0">
          <attribute name="source">label</attribute>
        </box>
      </image>
    </annotations>
"""

from __future__ import annotations

import functools
import math
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import PartialDataError
from .labels import parse_xml

CVAT_VERSION = "1.1"
DECIMALS = 2  # CVAT writes pixel coordinates with 2 decimals


@dataclass(frozen=True)
class CvatAttribute:
    """A label attribute declared in `<meta>`: CVAT drops shape attributes whose label does not declare them.

    `input_type` is one of CVAT's: select, radio, checkbox, number, text. `values` are the allowed values (select,
    radio), or empty for free text.
    """

    name: str
    input_type: str = "text"
    mutable: bool = False
    default: str = ""
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class CvatLabel:
    """A label declared in `<meta>`: its name, display colour '#rrggbb' and attributes."""

    name: str
    color: str = "#ff9900"
    attributes: tuple[CvatAttribute, ...] = ()


@dataclass
class CvatBox:
    """One `<box>`: label name, pixel corners (xtl, ytl, xbr, ybr) and its `<attribute>` children {name: value}."""

    label: str
    xyxy: tuple[float, float, float, float]
    attributes: dict[str, str] = field(default_factory=dict)
    occluded: bool = False
    z_order: int = 0
    source: str = "manual"  # CVAT's own shape source (manual, auto, semi-auto, file): not our `source` attribute


@dataclass
class CvatImage:
    """One `<image>`: frame id, file name as uploaded to CVAT, pixel size and boxes."""

    id: int
    name: str
    width: int
    height: int
    boxes: list[CvatBox] = field(default_factory=list)


@dataclass
class CvatAnnotations:
    """A parsed CVAT for images file: declared labels (may be empty), images in file order, ignored shape count."""

    labels: list[CvatLabel]
    images: list[CvatImage]
    ignored_shapes: int = 0


def round_px(v: float) -> float:
    """Round a pixel coordinate the way CVAT writes it (2 decimals), so written and read boxes are equal."""
    return round(float(v), DECIMALS)


def _fmt(v: float) -> str:
    return f"{v:.{DECIMALS}f}"


def _meta(labels: Sequence[CvatLabel], task_name: str, size: int) -> list[str]:
    """Lines of `<meta><task>` declaring every label and its attributes (no dump date: output stays deterministic)."""
    lines = ["  <meta>", "    <task>"]
    task = (("id", "0"), ("name", task_name), ("size", str(size)), ("mode", "annotation"), ("overlap", "0"),
            ("flipped", "False"))
    lines += [f"      <{k}>{escape(v)}</{k}>" for k, v in task]
    lines.append("      <labels>")
    for label in labels:
        lines += ["        <label>", f"          <name>{escape(label.name)}</name>",
                  f"          <color>{escape(label.color)}</color>", "          <type>rectangle</type>",
                  "          <attributes>"]
        for a in label.attributes:
            lines += ["            <attribute>", f"              <name>{escape(a.name)}</name>",
                      f"              <mutable>{a.mutable}</mutable>",
                      f"              <input_type>{escape(a.input_type)}</input_type>",
                      f"              <default_value>{escape(a.default)}</default_value>",
                      f"              <values>{escape(chr(10).join(a.values))}</values>", "            </attribute>"]
        lines += ["          </attributes>", "        </label>"]
    return lines + ["      </labels>", "    </task>", "  </meta>"]


_quote = functools.lru_cache(maxsize=1 << 16)(quoteattr)  # label names and attribute values repeat: escape once
_escape = functools.lru_cache(maxsize=1 << 16)(escape)


def _box(b: CvatBox) -> str:
    """One `<box>` element with its `<attribute>` children, on one line."""
    x1, y1, x2, y2 = (_fmt(v) for v in b.xyxy)
    attributes = "".join(f"<attribute name={_quote(k)}>{_escape(v)}</attribute>" for k, v in b.attributes.items())
    return (f'    <box label={_quote(b.label)} source={_quote(b.source)} occluded="{int(b.occluded)}" '
            f'xtl="{x1}" ytl="{y1}" xbr="{x2}" ybr="{y2}" z_order="{b.z_order}">{attributes}</box>')


def cvat_images_xml(images: Sequence[CvatImage], labels: Sequence[CvatLabel], task_name: str = "yolo-partial") -> str:
    """CVAT for images 1.1 XML text for `images` with the `labels` declared in `<meta>`; coordinates to 0.01 px.

    Written as text rather than through ElementTree: a review list holds up to hundreds of thousands of boxes, and
    building and serialising a tree of them costs several times the prediction.
    """
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", f"  <version>{CVAT_VERSION}</version>",
             *_meta(labels, task_name, len(images))]
    for im in images:
        lines.append(f'  <image id="{im.id}" name={quoteattr(im.name)} width="{im.width}" height="{im.height}">')
        lines += [_box(b) for b in im.boxes]
        lines.append("  </image>")
    return "\n".join([*lines, "</annotations>", ""])


def write_cvat_images(path: str | Path, images: Sequence[CvatImage], labels: Sequence[CvatLabel],
                      task_name: str = "yolo-partial") -> None:
    """Write `cvat_images_xml(...)` to path (UTF-8). Callers write into a temporary output folder."""
    Path(path).write_text(cvat_images_xml(images, labels, task_name), encoding="utf-8")


def _number(path: Path, e: ET.Element, key: str, kind=float):
    """Attribute `key` of element e as a finite number, or a one-line error naming the file and the element."""
    raw = e.get(key)
    try:
        v = kind(raw)
        if not math.isfinite(v):
            raise ValueError
    except (TypeError, ValueError):
        where = f"<{e.tag} name={e.get('name')!r}>" if e.tag == "image" else f"<{e.tag} label={e.get('label')!r}>"
        raise PartialDataError(f"{path}: {where} has {key}={raw!r}: expected a number") from None
    return v


def _read_labels(task: ET.Element | None) -> list[CvatLabel]:
    """Labels declared under `<meta><task|job|project>` (CVAT writes one of the three), attributes included."""
    labels = []
    for xl in task.iter("label") if task is not None else ():
        attributes = tuple(
            CvatAttribute(a.findtext("name", ""), a.findtext("input_type", "text"),
                          a.findtext("mutable", "False") == "True", a.findtext("default_value", "") or "",
                          tuple(v for v in (a.findtext("values", "") or "").split("\n") if v))
            for a in xl.iter("attribute"))
        labels.append(CvatLabel(xl.findtext("name", ""), xl.findtext("color", "") or "", attributes))
    return labels


def read_cvat_images(path: str | Path) -> CvatAnnotations:
    """Parse a CVAT for images 1.1 XML file -> CvatAnnotations; any problem is one PartialDataError naming the file.

    Image names must be unique; box corners must be numbers with xbr >= xtl and ybr >= ytl.
    """
    path = Path(path)
    root = parse_xml(path, "CVAT for images 1.1", f"reviewed file not found: {path}")
    if root.tag != "annotations":
        raise PartialDataError(f"{path}: root element <{root.tag}>: expected <annotations> (CVAT for images 1.1)")
    if root.find("track") is not None:
        raise PartialDataError(f"{path}: holds <track> elements (CVAT for video): expected CVAT for images 1.1")
    meta = root.find("meta")
    owner = None if meta is None else next((e for e in meta if e.tag in {"task", "job", "project"}), None)
    out = CvatAnnotations(_read_labels(owner), [])
    seen = set()
    for xi in root.iter("image"):
        name = xi.get("name")
        if not name:
            raise PartialDataError(f"{path}: an <image> has no name: expected name=\"<image file>\"")
        if name in seen:
            raise PartialDataError(f"{path}: image {name!r} appears twice: expected one <image> per image")
        seen.add(name)
        im = CvatImage(_number(path, xi, "id", int), name, _number(path, xi, "width", int),
                       _number(path, xi, "height", int))
        for shape in xi:
            if shape.tag != "box":
                out.ignored_shapes += shape.tag not in {"attribute"}  # tags, polygons, points: not boxes
                continue
            if not shape.get("label"):
                raise PartialDataError(f"{path}: a <box> of image {name!r} has no label: expected label=\"<name>\"")
            xyxy = tuple(_number(path, shape, k) for k in ("xtl", "ytl", "xbr", "ybr"))
            if xyxy[2] < xyxy[0] or xyxy[3] < xyxy[1]:
                raise PartialDataError(f"{path}: a <box> of image {name!r} has xbr < xtl or ybr < ytl: "
                                       f"expected top-left and bottom-right corners")
            attributes = {a.get("name", ""): (a.text or "") for a in shape.iter("attribute")}
            im.boxes.append(CvatBox(shape.get("label"), xyxy, attributes, shape.get("occluded") == "1",
                                    int(_number(path, shape, "z_order") if shape.get("z_order") else 0),
                                    shape.get("source") or "manual"))
        out.images.append(im)
    return out
