"""Embedded default dataset "shapes": procedurally generated, deterministic, partially annotated detection data.

Six classes cross three colours with three shapes so that neither colour nor shape alone identifies a class.
Objects are drawn over smooth colour noise and non-object clutter, with sizes from 6 px to 45% of the image
side, random rotation, colour jitter and occlusion. The train split's labels keep about half of the drawn objects
(the rest are listed in ``hidden.json``); val is completely labelled; a complete-label copy of train is written
as the "full" variant.

Usage: ``python -m yolo_partial.shapes [out_dir]``
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from .fileio import cache_root, hardlink_or_copy
from .labels import MANIFEST_FORMAT, data_yaml_text, read_label_file

SHAPES_VERSION = 2  # 2: manifest "root" field and the partial YAML's hidden: key
CLASS_SPECS = (  # (colour, shape): each colour is used by two classes and each shape by two classes
    ("red", "circle"),
    ("red", "triangle"),
    ("green", "triangle"),
    ("green", "square"),
    ("blue", "square"),
    ("blue", "circle"),
)
CLASS_NAMES = [f"{colour} {shape}" for colour, shape in CLASS_SPECS]
VARIANTS = ("partial", "full")

_CLASS_BGR = {"red": (40, 40, 215), "green": (50, 165, 40), "blue": (205, 95, 30)}
# Clutter avoids the class colours so that it never looks like an unlabelled object.
_CLUTTER_BGR = ((235, 235, 235), (25, 25, 25), (110, 110, 110), (35, 80, 125), (150, 45, 140), (40, 205, 220))
_MIN_SIZE_PX = 6
_MAX_SIZE_FRAC = 0.45
_MIN_VISIBLE = 0.4  # objects less visible than this are ambiguous and left unlabelled in every variant
_JPEG_QUALITY = 90
_SUBPIXEL_SHIFT = 4  # cv2 fixed-point bits, so small shapes are placed at sub-pixel positions
_SPLIT_IDS = {"train": 0, "val": 1}
_IMAGE_STREAM, _LABEL_STREAM = 0, 1  # separate RNG streams: label_prob must not change the images


def _fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates (..., 2) -> int32 fixed-point coordinates for cv2 drawing with _SUBPIXEL_SHIFT."""
    return np.round(np.asarray(points) * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)


def _background(rng: np.random.Generator, imgsz: int) -> np.ndarray:
    """Smooth colour noise around a random grey level, at two spatial scales -> uint8 BGR image (imgsz, imgsz, 3)."""
    base = rng.uniform(70, 190)
    img = np.full((imgsz, imgsz, 3), base, np.float32)
    for cells, amplitude in ((3, 45.0), (8, 20.0)):
        grid = rng.normal(0.0, amplitude, (cells, cells, 3)).astype(np.float32)
        grid += rng.normal(0.0, amplitude, (cells, cells, 1)).astype(np.float32)  # shared by the channels: brightness
        img += cv2.resize(grid / 2, (imgsz, imgsz), interpolation=cv2.INTER_CUBIC)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draw 3-10 random strokes, elongated blobs and polylines in non-class colours onto img (H, W, 3) in place."""
    size = img.shape[0]
    for _ in range(rng.integers(3, 11)):
        colour = _CLUTTER_BGR[rng.integers(len(_CLUTTER_BGR))]
        kind = rng.integers(3)
        if kind == 0:
            p0, p1 = _fixed(rng.uniform(0, size, (2, 2)))
            cv2.line(img, p0, p1, colour, int(rng.integers(1, 4)), cv2.LINE_AA, _SUBPIXEL_SHIFT)
        elif kind == 1:
            # Axis ratio >= 2.5 keeps blobs clearly distinct from the circle classes.
            minor = rng.uniform(2, 0.06 * size)
            axes = _fixed([minor * rng.uniform(2.5, 5), minor])
            centre = _fixed(rng.uniform(0, size, 2))
            cv2.ellipse(img, centre, axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA, _SUBPIXEL_SHIFT)
        else:
            steps = rng.normal(0, 0.12 * size, (int(rng.integers(3, 6)), 2))
            pts = _fixed(rng.uniform(0, size, 2) + np.cumsum(steps, axis=0))
            cv2.polylines(img, [pts], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA, _SUBPIXEL_SHIFT)


def _draw_shape(canvas: np.ndarray, shape: str, centre: np.ndarray, size: float, angle: float, colour, aa: bool):
    """Fill one shape of circumscribed diameter `size` px centred at `centre` (x, y) onto canvas in place."""
    line = cv2.LINE_AA if aa else cv2.LINE_8
    if shape == "circle":
        cv2.circle(canvas, _fixed(centre), int(round(size / 2 * (1 << _SUBPIXEL_SHIFT))), colour, -1, line,
                   _SUBPIXEL_SHIFT)
        return
    corners = 3 if shape == "triangle" else 4
    theta = angle + np.arange(corners) * 2 * np.pi / corners
    pts = centre + size / 2 * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    cv2.fillPoly(canvas, [_fixed(pts)], colour, line, _SUBPIXEL_SHIFT)


def _draw_object(rng: np.random.Generator, img: np.ndarray, pad: int) -> tuple[int, int, np.ndarray]:
    """Draw one random object onto img (S, S, 3) in place -> (class id, pixels of the whole shape, in-frame mask).

    The whole shape is rasterised on a canvas padded by pad px so that parts cut off by the image border count as
    not visible; the in-frame mask is a bool array (S, S).
    """
    imgsz = img.shape[0]
    cls = int(rng.integers(len(CLASS_SPECS)))
    colour_name, shape = CLASS_SPECS[cls]
    size = math.exp(rng.uniform(math.log(_MIN_SIZE_PX), math.log(_MAX_SIZE_FRAC * imgsz)))  # many small objects
    centre = rng.uniform(size / 4, imgsz - size / 4, 2)
    angle = rng.uniform(0, 2 * np.pi)
    colour = np.clip(np.array(_CLASS_BGR[colour_name]) + rng.integers(-20, 21, 3), 0, 255)
    _draw_shape(img, shape, centre, size, angle, tuple(int(c) for c in colour), aa=True)
    mask = np.zeros((imgsz + 2 * pad, imgsz + 2 * pad), np.uint8)
    _draw_shape(mask, shape, centre + pad, size, angle, 1, aa=False)
    return cls, int(mask.sum()), mask[pad:pad + imgsz, pad:pad + imgsz].astype(bool)


def _render(rng: np.random.Generator, imgsz: int) -> tuple[np.ndarray, list[str]]:
    """Draw one image -> (uint8 BGR image (imgsz, imgsz, 3), YOLO label lines of the sufficiently visible objects)."""
    img = _background(rng, imgsz)
    _draw_clutter(rng, img)
    pad = int(math.ceil(_MAX_SIZE_FRAC * imgsz / 2)) + 2
    owner = np.full((imgsz, imgsz), -1, np.int16)  # index of the topmost object at each pixel
    objects = [_draw_object(rng, img, pad) for _ in range(1 + rng.binomial(7, 3 / 7))]  # 1..8 objects, mean 4
    for i, (_, _, in_frame) in enumerate(objects):
        owner[in_frame] = i
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return img, [_label_line(cls, in_frame, imgsz) for i, (cls, total, in_frame) in enumerate(objects)
                 if (owner == i).sum() >= _MIN_VISIBLE * total]


def _label_line(cls: int, mask: np.ndarray, imgsz: int) -> str:
    """Boolean in-frame mask (imgsz, imgsz) of one object -> YOLO line 'cls cx cy w h' of its tight box.

    The box covers the whole in-frame shape, occluded parts included, as a human annotator would draw it.
    """
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    cx, cy, w, h = (x0 + x1) / 2 / imgsz, (y0 + y1) / 2 / imgsz, (x1 - x0) / imgsz, (y1 - y0) / imgsz
    return f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def _keep_mask(rng: np.random.Generator, n: int, label_prob: float) -> np.ndarray:
    """Bool array (n,): which objects keep their label; each with probability label_prob, at least one if n > 0."""
    keep = rng.random(n) < label_prob
    if n and not keep.any():
        keep[rng.integers(n)] = True
    return keep


def _write_split(tmp: Path, split: str, n: int, imgsz: int, seed: int, label_prob: float) -> list[dict]:
    """Write images and labels of one split under tmp/partial and tmp/full -> manifest entries of hidden objects.

    Only train is partially labelled; val keeps every label in both variants.
    """
    dirs = {d: tmp / d for d in ("partial/images", "partial/labels", "full/images", "full/labels")}
    for d in dirs.values():
        (d / split).mkdir(parents=True)
    hidden = []
    for index in range(n):
        key = (seed, _SPLIT_IDS[split], index)
        img, lines = _render(np.random.default_rng([*key, _IMAGE_STREAM]), imgsz)
        keep = (_keep_mask(np.random.default_rng([*key, _LABEL_STREAM]), len(lines), label_prob)
                if split == "train" else np.ones(len(lines), bool))
        stem = f"{index:06d}"
        image = dirs["partial/images"] / split / f"{stem}.jpg"
        cv2.imwrite(str(image), img, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        hardlink_or_copy(image, dirs["full/images"] / split / image.name)
        (dirs["full/labels"] / split / f"{stem}.txt").write_text("".join(f"{x}\n" for x in lines))
        (dirs["partial/labels"] / split / f"{stem}.txt").write_text(
            "".join(f"{x}\n" for x, k in zip(lines, keep) if k))
        for line in (x for x, k in zip(lines, keep) if not k):
            cls, *box = line.split()
            hidden.append({"image": f"images/{split}/{image.name}", "cls": int(cls), "box": [float(v) for v in box]})
    return hidden


def _count_labels(label_dir: Path) -> dict[int, int]:
    """Directory of YOLO label files -> {class id: number of boxes}."""
    counts = dict.fromkeys(range(len(CLASS_NAMES)), 0)
    for path in label_dir.glob("*.txt"):
        for _, cls, _ in read_label_file(path):
            counts[cls] += 1
    return counts


def _manifest(tmp: Path, seed: int, n_train: int, hidden: list[dict]) -> dict:
    """Manifest dict (the hidden.json format) describing the objects left out of tmp's partial train labels."""
    before = _count_labels(tmp / "full/labels/train")
    after = _count_labels(tmp / "partial/labels/train")
    per_class = {name: {"before": before[c], "after": after[c], "removed": before[c] - after[c]}
                 for c, name in enumerate(CLASS_NAMES)}
    summary = {"images": n_train, "boxes_before": sum(before.values()), "boxes_after": sum(after.values()),
               "removed": len(hidden), "per_class": per_class}
    return {"format": MANIFEST_FORMAT, "source": f"shapes-v{SHAPES_VERSION}", "mode": "shapes", "seed": seed,
            "root": "partial", "summary": summary, "removed": hidden}


def _data_yaml(dataset_dir: Path, hidden: bool) -> str:
    """Ultralytics data YAML text for the dataset folder dataset_dir (absolute path, with images/ and labels/).

    `hidden:` names the manifest of unlabelled objects for hidden-object recall; like train and val, it is relative
    to the dataset folder `path`.
    """
    fields = {"path": str(dataset_dir), "train": "images/train", "val": "images/val"}
    return data_yaml_text({**fields, "hidden": "../hidden.json"} if hidden else fields, CLASS_NAMES)


def _params(n_train: int, n_val: int, imgsz: int, seed: int, label_prob: float) -> dict:
    """Generation arguments as stored in generator.json, to detect a root generated with other arguments."""
    return {"generator": "shapes", "version": SHAPES_VERSION, "n_train": n_train, "n_val": n_val,
            "imgsz": imgsz, "seed": seed, "label_prob": label_prob}


def _is_complete(root: Path, params: dict) -> bool:
    """Whether root holds a finished dataset; ValueError if it was generated with other arguments."""
    meta = root / "generator.json"
    if not meta.is_file():
        return False
    found = json.loads(meta.read_text())
    if found != params:
        raise ValueError(f"{root} was generated with {found}, not {params}; use another folder")
    return True


def _build(tmp: Path, root: Path, params: dict) -> None:
    """Write the whole dataset into tmp, with YAML paths pointing at its final location root."""
    hidden = []
    for split, n in (("train", params["n_train"]), ("val", params["n_val"])):
        hidden += _write_split(tmp, split, n, params["imgsz"], params["seed"], params["label_prob"])
    manifest = _manifest(tmp, params["seed"], params["n_train"], hidden)
    (tmp / "hidden.json").write_text(json.dumps(manifest, indent=1))
    for variant in VARIANTS:
        (tmp / f"{variant}.yaml").write_text(_data_yaml(root / variant, hidden=variant == "partial"))
    (tmp / "generator.json").write_text(json.dumps(params, indent=1))


def generate(root, n_train: int = 800, n_val: int = 200, imgsz: int = 160, seed: int = 0,
             label_prob: float = 0.5) -> Path:
    """Generate the shapes dataset under directory root (str or Path) unless already there -> partial YAML path.

    The dataset is built in a sibling temporary folder and renamed into place, so concurrent callers and
    interrupted runs never leave a half-written root: the loser of a race discards its own copy.
    """
    root = Path(root).expanduser().resolve()
    params = _params(n_train, n_val, imgsz, seed, label_prob)
    if not _is_complete(root, params):
        if root.exists() and any(root.iterdir()):
            raise FileExistsError(f"{root} exists but holds no complete shapes dataset; remove it or use another")
        tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)  # left over by an earlier crashed run of a process with our pid
        tmp.mkdir(parents=True)
        try:
            _build(tmp, root, params)
            os.replace(tmp, root)
        except OSError:
            if not _is_complete(root, params):  # else another process finished first: use its copy
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / "partial.yaml"


def ensure_shapes(variant: str = "partial", cache_dir=None) -> Path:
    """Data YAML path of the shapes dataset variant ("partial" or "full"), generating it on first use.

    The cache folder is cache_dir, else $YOLO_PARTIAL_CACHE, else ~/.cache/yolo-partial.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown shapes variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    cache = Path(cache_dir) if cache_dir else cache_root()
    root = generate(cache / f"shapes-v{SHAPES_VERSION}")
    return root.parent / f"{variant}.yaml"


def _main(argv: list[str]) -> None:
    """CLI: generate into argv[0] (default: the cache folder) and print the YAML path and the summary counts."""
    yaml_path = generate(argv[0]) if argv else ensure_shapes()
    summary = json.loads((yaml_path.parent / "hidden.json").read_text())["summary"]
    print(yaml_path)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    _main(sys.argv[1:])
