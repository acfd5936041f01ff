"""PASCAL VOC (a VOCdevkit folder) -> YOLO layout in the BRL paper's protocol.

train = VOC2007 trainval + VOC2012 trainval (the years present), test = VOC2007 test; objects marked "difficult" are
kept. Boxes follow Ultralytics' VOC.yaml conversion: VOC's 1-based pixel corners are shifted by -1 (its centre is
(xmin + xmax) / 2 - 1, its width xmax - xmin), then clipped to the image. Images are linked as `<year>_<id>.jpg`
(ids of the two years overlap) and never copied unless the platform cannot link.

    convert_voc("VOCdevkit", "datasets/voc0712")
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import PartialDataError
from ..labels import data_yaml_text, parse_xml
from ..fileio import atomic_dir, link_image
from . import format_table, yolo_line

CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
SPLITS = {"train": (("2007", "trainval"), ("2012", "trainval")), "test": (("2007", "test"),)}
CORNERS = ("xmin", "ymin", "xmax", "ymax")
COUNTS = ("images", "boxes", "difficult", "empty", "zero-size", "missing images", "repeated ids")


def read_image_set(path: Path) -> tuple[list[str], int]:
    """Image ids of one ImageSets/Main list in file order without repeats -> (ids, repeats dropped)."""
    ids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    unique = list(dict.fromkeys(ids))
    return unique, len(ids) - len(unique)


def read_annotation(path: Path, image: Path, stats: Counter) -> list[str]:
    """YOLO label lines of one VOC annotation XML; tallies kept, difficult, unknown-class and empty boxes in `stats`."""
    root = parse_xml(path, "a VOC annotation", f"{path}: annotation not found: expected one XML per listed image id")
    try:
        size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    except (TypeError, ValueError):
        size = (0, 0)
    if min(size) <= 0:  # a few hand-made VOC-style files lack <size>: read it from the image header
        from PIL import Image

        try:
            with Image.open(image) as im:
                size = im.size
        except OSError:
            raise PartialDataError(f"{path}: no <size> and {image} is unreadable: expected a JPEG image") from None
    lines = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        try:
            x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) - 1 for k in CORNERS)
        except (TypeError, ValueError):
            raise PartialDataError(
                f"{path}: object '{name}' needs a <bndbox> with numeric {', '.join(CORNERS)}"
            ) from None
        if name not in CLASS_ID:
            stats[f"unknown class '{name}'"] += 1
            continue
        line = yolo_line(CLASS_ID[name], (x1, y1, x2, y2), size)
        if line is None:
            stats["zero-size"] += 1
            continue
        lines.append(line)
        stats["boxes"] += 1
        stats["difficult"] += (obj.findtext("difficult") or "0").strip() == "1"
    return lines


def convert_image_set(voc: Path, year: str, name: str, out: Path, split: str, stats: Counter) -> list[Path]:
    """Link the images of image set `name` of VOC<year> into out/images/<split>, write labels into out/labels/<split>.

    Returns the listed images that do not exist (left out); tallies images, boxes and what was left out in `stats`.
    """
    from ultralytics.utils import TQDM

    ids, repeats = read_image_set(voc / f"ImageSets/Main/{name}.txt")
    stats["repeated ids"] += repeats
    missing = []
    for i in TQDM(ids, desc=f"VOC{year} {name}"):
        image = voc / "JPEGImages" / f"{i}.jpg"
        if not image.is_file():
            missing.append(image)
            continue
        lines = read_annotation(voc / "Annotations" / f"{i}.xml", image, stats)
        link_image(image, out / "images" / split / f"{year}_{i}.jpg")
        (out / "labels" / split / f"{year}_{i}.txt").write_text(
            "\n".join(lines) + "\n" if lines else "", encoding="utf-8"
        )
        stats.update(images=1, empty=not lines)
    return missing


def convert_voc(root: str | Path, out: str | Path) -> dict:
    """Convert a VOCdevkit (VOC2007 and/or VOC2012) into YOLO layout under `out` (train and test splits).

    Returns:
        (dict): per split, 'images', 'boxes', 'difficult' (kept), 'empty' (images without boxes), 'missing images'
            (listed but absent, left out), 'zero-size' and "unknown class '<name>'" (boxes left out), 'repeated ids',
            and 'sources' (the image sets used).
    """
    from ultralytics.utils import LOGGER

    root = Path(root)
    if not any((root / f"VOC{year}").is_dir() for year in ("2007", "2012")):
        raise PartialDataError(f"root={root} holds neither VOC2007 nor VOC2012: expected the VOCdevkit folder")
    sources = {
        s: [(y, n) for y, n in sets if (root / f"VOC{y}/ImageSets/Main/{n}.txt").is_file()]
        for s, sets in SPLITS.items()
    }
    for split, sets in sources.items():
        if not sets:
            wanted = " or ".join(f"VOC{y}/ImageSets/Main/{n}.txt" for y, n in SPLITS[split])
            raise PartialDataError(f"root={root}: no {split} image set: expected {wanted}")
    stats, missing = {s: Counter() for s in SPLITS}, {s: [] for s in SPLITS}
    producer = {"command": "convert voc", "root": str(root.absolute())}
    with atomic_dir(out, producer) as tmp:
        for split, sets in sources.items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for year, name in sets:
                missing[split] += convert_image_set(root / f"VOC{year}", year, name, tmp, split, stats[split])
            stats[split]["missing images"] = len(missing[split])
            if not stats[split]["images"]:
                first = f" (first missing: {missing[split][0]})" if missing[split] else ""
                raise PartialDataError(
                    f"root={root}: no {split} image found{first}: expected JPEGImages/<id>.jpg per listed id"
                )
        splits = {"train": "images/train", "val": "images/test", "test": "images/test"}  # VOC has no separate val
        yaml_text = data_yaml_text(splits, CLASSES, "# PASCAL VOC converted by yolo-partial\n")
        (tmp / "data.yaml").write_text(yaml_text, encoding="utf-8")
    summary = {
        s: {
            "sources": [f"VOC{y} {n}" for y, n in sources[s]],
            **{k: stats[s][k] for k in COUNTS},
            **{k: n for k, n in stats[s].items() if k.startswith("unknown class")},
        }
        for s in SPLITS
    }
    for split, s in summary.items():
        if missing[split]:
            LOGGER.warning(
                f"VOC {split}: {len(missing[split])} listed images not found, left out (first: {missing[split][0]})"
            )
        for key in (k for k in s if k.startswith("unknown class")):
            LOGGER.warning(f"VOC {split}: {s[key]} boxes of {key} left out: expected one of the 20 VOC classes")
    sets = "; ".join(f"{s}: {' + '.join(v['sources'])}" for s, v in summary.items())
    LOGGER.info(f"VOC -> {Path(out).absolute()} ({sets})\n{format_table(summary, list(COUNTS))}")
    return summary
