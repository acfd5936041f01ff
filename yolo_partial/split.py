"""Partial-annotation splits: a new dataset whose training labels lose boxes by one of the SPEC section 4 rules.

Rules, applied to the data YAML's `train` images only (val/test are referenced unchanged, so they stay complete):
  easy     an image with n >= 2 boxes loses exactly one box
  hard     an image with n >= 2 boxes loses floor(n/2) boxes
  extreme  an image with n >= 1 boxes keeps exactly one box
  miss50   class c loses floor(N_c/2) of its N_c training boxes, chosen over the whole training set
  keep     each box is kept independently with probability `ratio`
No rule empties an image that has a single box: in miss50 and keep such a box is exempt, and miss50 then takes a
class's floor(N_c/2) boxes from its boxes in multi-box images only (all of those, with a warning, if too few). The
exemption is this tool's choice (the Co-mining paper says only "50 % of each category at random"): `keep_single=False`
lifts it for miss50 and keep, so single boxes are drawn like any other.

Randomness: each box gets a key u in [0, 1), drawn in label-line order from a generator seeded by a hash of (seed,
mode, image path relative to the dataset root). easy/hard/extreme remove an image's boxes with the smallest keys,
keep removes the boxes with u >= ratio (so a smaller ratio keeps a subset of what a larger one keeps), and miss50
removes the floor(N_c/2) smallest keys of each class. No key depends on the file order or on other files, so the
same arguments give the same split on any machine, and an image-by-image mode picks the same boxes of an image in any
subset of the dataset. Files are streamed one at a time; miss50 streams twice (keys first, then writing) and holds
only one class id and one key per box in between.

Output folder (default <datasets_dir>/<source root folder name>-<mode>[ratio]-s<seed>, written atomically):
  images/...   the train images, linked not copied, at their path relative to the source root
  labels/...   their partial labels where Ultralytics looks for them; kept lines are copied verbatim, in order
  data.yaml    train relative to the folder, val/test pointing at the source by absolute path, `hidden: hidden.json`
  hidden.json  the manifest: every removed box (image, cls, box) and per-class counts
  partial.json when the source names a `partial:` file: its entries carried over (see `carry_partial`)
Label files must hold boxes ('class cx cy w h'); polygon lines are rejected with the file and line named, because
the manifest records boxes and so could not restore them.

Usage: ``yolo-partial split data=X.yaml mode=easy|hard|extreme|miss50|keep [ratio=r] seed=0 [out=DIR]``
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import posixpath
import random
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np
from ultralytics.data.utils import IMG_FORMATS, img2label_paths
from ultralytics.utils import LOGGER, TQDM

from .data import check_image_sources, dataset_root, load_yaml, local_data_yaml
from .errors import PartialConfigError, PartialDataError
from .fileio import atomic_dir, link_image
from .labels import MANIFEST_FORMAT, Row, class_names, data_yaml_text, read_label_file
from .partial_labels import ImagePartial, image_key, load_for_data, write_partial
from .keys import check_known_keys

MODES = ("easy", "hard", "extreme", "miss50", "keep")
SPLIT_KEYS = {"data", "mode", "ratio", "seed", "out", "keep_single"}
EXTERNAL = "_external"  # train images outside the source root are mirrored under out/_external/<absolute path>


@dataclass
class TrainSet:
    """The train images of a data YAML, as paths relative to the output folder."""

    entry: str | list[str]  # the new YAML's `train:` value, same form as the source's
    images: dict[str, str] = field(default_factory=dict)  # relative path (POSIX) -> absolute source image path
    lists: dict[str, list[str]] = field(default_factory=dict)  # relative .txt list path -> its images' relative paths
    orphans: list[str] = field(default_factory=list)  # label files beside no train image (ignored, as Ultralytics)


def run_split(args: dict[str, Any]) -> Path:
    """CLI entry: `args` holds data, mode, ratio, seed, out (typed by smart_value) -> the new data YAML path."""
    check_known_keys(args, SPLIT_KEYS)
    if not args.get("data"):
        raise PartialDataError("split needs data=PATH: expected a data YAML such as datasets/coco128/data.yaml")
    out = args.get("out")
    # data= may be a shipped name (shapes-full): resolved, and generated on first use, as train resolves it
    return split_dataset(local_data_yaml(str(args["data"])), args.get("mode"), args.get("ratio"), args.get("seed", 0),
                         None if out is None else str(out), args.get("keep_single", True))


def split_dataset(data: str | Path, mode: str, ratio: float | None = None, seed: int = 0,
                  out: str | Path | None = None, keep_single: bool = True) -> Path:
    """Write a copy of dataset `data` whose train labels follow split `mode` -> the new data YAML's path.

    Args:
        data: the source data YAML; it is only read.
        mode: one of MODES; `ratio` (a number in [0, 1]) is required with 'keep' and refused otherwise.
        seed: any integer; the same arguments always give byte-identical labels and manifest.
        out: output folder, replaced if an earlier yolo-partial run wrote it; default `default_out(...)`.
        keep_single: miss50 and keep never remove the box of a single-box image (the default); False draws it too.
    """
    ratio = check_split_args(mode, ratio, seed)
    if keep_single not in (True, False):
        raise PartialConfigError(f"keep_single={keep_single!r} is invalid: expected True or False")
    if keep_single is False and mode not in ("miss50", "keep"):
        raise PartialConfigError(f"keep_single=False applies to mode=miss50|keep only (mode={mode} never empties an image)")
    yaml_path = Path(data).expanduser().absolute()
    cfg = load_yaml(yaml_path, "data YAML")
    check_image_sources(yaml_path, cfg)
    names = class_names(yaml_path, cfg)
    root = dataset_root(yaml_path, cfg).resolve()
    out = Path(out if out is not None else default_out(root, mode, ratio, seed)).expanduser().absolute()
    if out.resolve().is_relative_to(root):
        raise PartialDataError(f"out={out} is inside the source dataset {root}: expected a folder outside it")
    train = train_set(yaml_path, cfg, root)
    if train.orphans:
        LOGGER.warning(f"split: {len(train.orphans)} label files have no train image and are left out, "
                       f"e.g. {train.orphans[0]}")
    producer = {"command": "split", "data": str(yaml_path), "mode": mode, "ratio": ratio, "seed": seed,
                **({} if keep_single else {"keep_single": False})}
    with atomic_dir(out, producer) as tmp:
        removed_of = (miss50_plan(train, names, seed, keep_single) if mode == "miss50"
                      else local_rule(mode, ratio, seed, keep_single))
        with open(tmp / ".removed.part", "w", encoding="utf-8") as part:
            before, after, n_bare = write_train(tmp, out, train, len(names), removed_of, part)
        summary = make_summary(len(train.images), names, before, after)
        header = {"format": MANIFEST_FORMAT, "source": str(yaml_path), "mode": mode, "ratio": ratio, "seed": seed,
                  **({} if keep_single else {"keep_single": False}), "root": ".", "summary": summary}
        partial = load_for_data(yaml_path)  # the source's partial: file, carried over (its claims kept true)
        if partial is not None:
            write_partial(tmp / "partial.json", carry_partial(partial, train, lost_classes(tmp / ".removed.part")),
                          [names[i] for i in range(len(names))])
        write_manifest(tmp / "hidden.json", header, tmp / ".removed.part")
        write_lists(tmp, train.lists)
        (tmp / "data.yaml").write_text(data_yaml(out, train.entry, eval_sources(cfg, root), names, header,
                                                 partial is not None))
    log_summary(out, header, n_bare)
    return out / "data.yaml"


def check_split_args(mode: Any, ratio: Any, seed: Any) -> float | None:
    """Raise a one-line error for a bad mode, ratio or seed -> ratio as a float (None unless mode is 'keep')."""
    if mode not in MODES:
        raise PartialDataError(f"mode={mode} is invalid: expected one of {'|'.join(MODES)}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise PartialDataError(f"seed={seed} is invalid: expected an integer")
    if mode != "keep":
        if ratio is not None:
            raise PartialDataError(f"ratio={ratio} applies only to mode=keep, not mode={mode}")
        return None
    if ratio is None:
        raise PartialDataError("mode=keep needs ratio=R: expected the fraction of boxes to keep, a number in [0, 1]")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
        raise PartialDataError(f"ratio={ratio} is invalid: expected a number in [0, 1]")
    return float(ratio)


def default_out(root: Path, mode: str, ratio: float | None, seed: int) -> Path:
    """Default output folder: Ultralytics' datasets_dir / '<source root name>-<mode>[ratio]-s<seed>'.

    The root folder's name (e.g. 'coco128'), not the YAML stem, because dataset YAMLs are often just 'data.yaml'.
    """
    from ultralytics.utils import DATASETS_DIR

    tag = f"keep{ratio:g}" if mode == "keep" else mode
    return DATASETS_DIR / f"{root.name}-{tag}-s{seed}"


def mirror(path: str, root: str) -> str:
    """Path of absolute `path` inside the output folder (POSIX text): relative to root, else under EXTERNAL."""
    inside = os.path.join(root, "")
    rel = path[len(inside):] if path.startswith(inside) else os.path.join(EXTERNAL, os.path.splitdrive(path)[1][1:])
    return rel.replace(os.sep, "/")


def train_set(yaml_path: Path, cfg: dict[str, Any], root: Path) -> TrainSet:
    """Collect the train images of each train source (folder or .txt list), as Ultralytics' get_img_files would.

    Paths are plain strings: a dataset can hold a million images, and Path objects cost several times the memory.
    """
    sources = cfg["train"] if isinstance(cfg["train"], list) else [cfg["train"]]
    paths = [str((root / str(s)).resolve()) for s in sources]
    entries = [mirror(p, str(root)) for p in paths]
    train = TrainSet(entries if isinstance(cfg["train"], list) else entries[0])
    for p, entry in zip(paths, entries):
        if os.path.isdir(p):
            images = [f for f in glob.iglob(os.path.join(glob.escape(p), "**", "*.*"), recursive=True) if is_image(f)]
            train.orphans += orphan_labels(p, images)
        else:
            images = list_images(Path(p))
            train.lists[entry] = [mirror(im, str(root)) for im in images]
        if not images:
            formats = ", ".join(sorted(IMG_FORMATS))
            raise PartialDataError(f"{yaml_path}: no train images in {p}: expected image files ({formats})")
        train.images.update((mirror(im, str(root)), im) for im in images)
    train.images = dict(sorted(train.images.items()))  # listed twice -> linked and split once
    return train


def is_image(path: str) -> bool:
    """Whether a file name has one of Ultralytics' image extensions."""
    return path.rpartition(".")[-1].lower() in IMG_FORMATS


def list_images(list_file: Path) -> list[str]:
    """Absolute image paths of an image list file ('./x' is relative to the list's folder); missing ones are errors."""
    images = []
    for n, line in enumerate(list_file.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if not is_image(line):
            continue
        image = os.path.abspath(list_file.parent / line[2:] if line.startswith("./") else line)
        if not os.path.isfile(image):
            raise PartialDataError(f"{list_file}: line {n}: image {line} not found: expected existing image paths")
        images.append(image)
    return images


def orphan_labels(folder: str, images: list[str]) -> list[str]:
    """Label files (sorted) in the label folder of image folder `folder` that belong to none of `images`."""
    label_dir = os.path.dirname(img2label_paths([os.path.join(folder, "x.jpg")])[0])
    if label_dir == folder or not os.path.isdir(label_dir):
        return []
    used = set(img2label_paths(images))
    found = glob.iglob(os.path.join(glob.escape(label_dir), "**", "*.txt"), recursive=True)
    return sorted(f for f in found if f not in used)


def box_keys(seed: int, mode: str, rel: str, n: int) -> list[float]:
    """n random keys in [0, 1) for the boxes of image `rel`, from a generator seeded by (seed, mode, rel) only.

    Only `random.random()` is used: Python guarantees its sequence for a given integer seed across versions.
    """
    digest = hashlib.blake2b(f"{seed}\n{mode}\n{rel}".encode(), digest_size=16).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    return [rng.random() for _ in range(n)]


def local_rule(mode: str, ratio: float | None, seed: int, keep_single: bool = True
               ) -> Callable[[str, list[Row]], set[int]]:
    """The removal rule of an image-by-image mode: (image rel path, rows) -> indices of the rows to remove."""

    def removed_of(rel: str, rows: list[Row]) -> set[int]:
        n = len(rows)
        if n == 0 or (n < 2 and (keep_single or mode != "keep")):  # a single box is exempt unless keep_single=False
            return set()
        keys = box_keys(seed, mode, rel, n)
        if mode == "keep":
            return {i for i, u in enumerate(keys) if u >= ratio}
        k = {"easy": 1, "hard": n // 2, "extreme": n - 1}[mode]
        return set(sorted(range(n), key=keys.__getitem__)[:k])

    return removed_of


def miss50_plan(train: TrainSet, names: dict[int, str], seed: int, keep_single: bool = True
                ) -> Callable[[str, list[Row]], set[int]]:
    """Pass 1 of miss50: key every box, pick each class's floor(N_c/2) smallest keys -> the rule for pass 2.

    Pass 2 must visit the images in `train.images` order; boxes are identified by their position in that stream.
    """
    classes, keys = array("l"), array("d")
    for rel, image in TQDM(train.images.items(), desc="split miss50: drawing keys"):
        rows = read_label_file(img2label_paths([image])[0], len(names)) or []
        classes.extend(c for _, c, _ in rows)
        drawn = len(rows) > 1 or not keep_single
        keys.extend(box_keys(seed, "miss50", rel, len(rows)) if drawn else [2.0] * len(rows))  # 2: exempt
    cls, key = np.frombuffer(classes, dtype=classes.typecode), np.frombuffer(keys)
    order = np.lexsort((key, cls))  # by class, then key; exempt boxes (key 2) last within their class
    total, free = np.bincount(cls, minlength=len(names)), np.bincount(cls[key < 1], minlength=len(names))
    start = np.concatenate(([0], np.cumsum(total)[:-1]))
    drop = np.zeros(len(cls), bool)
    for c in range(len(names)):
        drop[order[start[c]:start[c] + min(total[c] // 2, free[c])]] = True
    short = [f"{names[c]} {free[c]}/{total[c] // 2}" for c in range(len(names)) if free[c] < total[c] // 2]
    if short:
        LOGGER.warning(f"split miss50: {len(short)} classes have too few boxes in multi-box images to remove half "
                       f"(single-box images are never emptied); removed/wanted: {', '.join(short)}")
    position = 0

    def removed_of(rel: str, rows: list[Row]) -> set[int]:
        nonlocal position
        picked = set(np.flatnonzero(drop[position:position + len(rows)]).tolist())
        position += len(rows)
        return picked

    return removed_of


def write_train(tmp: Path, out: Path, train: TrainSet, nc: int, removed_of: Callable[[str, list[Row]], set[int]],
                part: TextIO) -> tuple[list[int], list[int], int]:
    """Link every train image into tmp, write its partial labels, stream removed boxes to `part` as JSON lines.

    Returns per-class box counts before and after, and the number of images without a label file.
    Paths are plain strings here: pathlib costs more than the file operations on a fast disk.
    """
    before, after, n_bare, sep = [0] * nc, [0] * nc, 0, ""
    for rel, image, label_dst, rows in TQDM(linked_images(tmp, out, train.images, nc, "train image"),
                                            total=len(train.images), desc="split: writing labels"):
        if rows is None:  # a background image: Ultralytics reads a missing label file as 'no objects'
            n_bare += 1
            continue
        drop, kept = removed_of(rel, rows), []
        for i, (line, c, box) in enumerate(rows):
            before[c] += 1
            if i in drop:
                part.write(sep + json.dumps({"image": rel, "cls": c, "box": box}))
                sep = ",\n"
            else:
                after[c] += 1
                kept.append(line + "\n")
        with open(label_dst, "w", encoding="utf-8") as f:
            f.write("".join(kept))
    return before, after, n_bare


def linked_images(tmp: Path, out: Path, images: dict[str, str], nc: int, what: str = "image"
                  ) -> Iterator[tuple[str, str, str, list[Row] | None]]:
    """Link each image of {relative path: source image} into tmp (a dataset that will live at `out`) and read its
    source labels -> yields (rel, source image, the label file to write in tmp, the label rows or None when none).

    Shared by every tool that writes a new dataset version (split, merge, accept): one place decides where an image's
    link and label file go, refuses two images sharing one label file, and makes each folder once.
    """
    made, labels = set(), set()
    for rel, image in images.items():
        image_rel, label_rel = output_paths(out, rel)
        if label_rel in labels:
            raise PartialDataError(f"{image}: shares its label file with another {what}: expected one per image")
        labels.add(label_rel)
        image_dst, label_dst = os.path.join(tmp, image_rel), os.path.join(tmp, label_rel)
        for folder in {os.path.dirname(image_dst), os.path.dirname(label_dst)} - made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        link_image(Path(image), Path(image_dst))
        yield rel, image, label_dst, read_label_file(img2label_paths([image])[0], nc)


def output_paths(out: Path, rel: str) -> tuple[str, str]:
    """Image path `rel` (POSIX) in folder `out` -> (image, label) paths relative to out, in the platform's form.

    The label path is where Ultralytics will look (img2label_paths of the final image path), so it must lie in out.
    """
    root = f"{out}{os.sep}"
    label = img2label_paths([root + rel.replace("/", os.sep)])[0]
    if not label.startswith(root):
        raise PartialDataError(f"out={out}: the label file of {rel} would be {label}, outside out: expected an out "
                               f"path without an 'images' folder, or train images inside an 'images' folder")
    return rel.replace("/", os.sep), label[len(root):]


def write_lists(tmp: Path, lists: dict[str, list[str]]) -> None:
    """Write each train image list file, its lines './'-relative to its own folder as Ultralytics reads them."""
    for rel, images in lists.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text("".join(f"./{posixpath.relpath(im, posixpath.dirname(rel) or '.')}\n" for im in images))


def make_summary(n_images: int, names: dict[int, str], before: list[int], after: list[int]) -> dict[str, Any]:
    """The manifest's summary: image count, box totals and per-class counts."""
    per_class = {names[c]: {"before": b, "after": a, "removed": b - a} for c, (b, a) in enumerate(zip(before, after))}
    return {"images": n_images, "boxes_before": sum(before), "boxes_after": sum(after),
            "removed": sum(before) - sum(after), "per_class": per_class}


def write_manifest(path: Path, header: dict[str, Any], part: Path) -> None:
    """Write hidden.json: `header`'s keys, then "removed" holding the entries of file `part` (one per line)."""
    with open(path, "w", encoding="utf-8") as f, open(part, encoding="utf-8") as entries:
        f.write(json.dumps(header, indent=1)[:-2] + ',\n "removed": [\n')
        while chunk := entries.read(1 << 20):
            f.write(chunk)
        f.write("\n]}\n")
    part.unlink()


def eval_sources(cfg: dict[str, Any], root: Path) -> dict[str, str | list[str]]:
    """The source's val/test image sources as absolute paths, so the split evaluates on the complete labels."""
    absolute = lambda s: str((root / str(s)).resolve())  # noqa: E731
    return {k: [absolute(s) for s in v] if isinstance(v, list) else absolute(v)
            for k in ("val", "test") if (v := cfg.get(k))}


def carry_partial(partial, images: TrainSet, lost: dict[str, set[int]],
                  added: dict[str, set[int]] | None = None) -> dict[str, Any]:
    """A source's `partial:` entries for a new version of its dataset (split, accept), every claim kept true: images
    of `images` under their path in the output, the classes that lost a box there (`lost`, by that path) taken out of
    their explicit `labeled_classes`, and the classes that gained one (`added`) out of their `negative_classes`; other
    images (val/test, read from the source) under their absolute path. Ignore boxes stay; an image without
    `labeled_classes` keeps none, like every label file the split makes partial."""
    out_rel = {image_key(image): rel for rel, image in images.images.items()}
    entries = {}
    for entry, key in zip(partial.entries.values(), partial.by_key):
        rel = out_rel.get(key)
        if rel is None:
            entries[key] = entry
        else:
            labeled = None if entry.labeled is None else entry.labeled - lost.get(rel, set())
            entries[rel] = ImagePartial(labeled, entry.negative - (added or {}).get(rel, set()), entry.ignore)
    return entries


def lost_classes(removed: Path) -> dict[str, set[int]]:
    """{image: classes of its removed boxes} from the manifest's streamed entries (one JSON object a line)."""
    lost: dict[str, set[int]] = {}
    with open(removed, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                box = json.loads(line.strip().rstrip(","))
                lost.setdefault(box["image"], set()).add(box["cls"])
    return lost


def data_yaml(out: Path, train: str | list[str], evals: dict[str, Any], names: dict[int, str],
              header: dict[str, Any], partial: bool = False) -> str:
    """The split's data YAML text, with a comment saying what was split and how."""
    tag = f"keep ratio={header['ratio']:g}" if header["mode"] == "keep" else header["mode"]
    comment = (f"# yolo-partial split of {json.dumps(header['source'])}: {tag} seed={header['seed']}\n"
               "# Train labels are partial (removed boxes are listed in hidden.json); val/test are the source's.\n")
    extra = {"partial": "partial.json"} if partial else {}
    return data_yaml_text({"path": str(out), "train": train, **evals, "hidden": "hidden.json", **extra}, names, comment)


def log_summary(out: Path, header: dict[str, Any], n_bare: int) -> None:
    """Print the split's box counts, overall and per class (classes with boxes only)."""
    s = header["summary"]
    share = s["removed"] / max(s["boxes_before"], 1)
    LOGGER.info(f"split {header['mode']}: {s['images']} train images ({n_bare} without a label file), "
                f"{s['boxes_before']} boxes -> {s['boxes_after']} kept, {s['removed']} removed ({share:.1%})")
    LOGGER.info(f"{'class':>24} {'before':>8} {'after':>8} {'removed':>8}")
    for name, c in s["per_class"].items():
        if c["before"]:
            LOGGER.info(f"{name:>24} {c['before']:>8} {c['after']:>8} {c['removed']:>8}")
    LOGGER.info(f"split written to {out} (data YAML {out / 'data.yaml'}, manifest {out / 'hidden.json'})")
