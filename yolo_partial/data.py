"""Dataset resolution and pre-flight checks: the embedded default dataset, clear one-line errors for bad data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from ultralytics.data.utils import IMG_FORMATS

from .errors import PartialDataError
from .labels import LABEL_FORMAT, class_names, label_problem

DEFAULT_DATA = "shapes"  # the embedded, generated-on-first-use dataset
OTHER_SOURCES = {".zip", ".tar", ".gz", ".tgz", ".ndjson"}  # data= sources that Ultralytics reads itself


def load_yaml(path: str | Path, what: str = "YAML") -> dict[str, Any]:
    """Load a YAML mapping, or raise a one-line error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise PartialDataError(f"{what} not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:  # e.g. no read permission
        raise PartialDataError(f"{p}: cannot read {what} ({e.strerror or e}): expected a readable file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise PartialDataError(f"{p}: unreadable {what}{where}: expected a YAML mapping of key: value") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PartialDataError(f"{p}: expected a YAML mapping of key: value, got {type(data).__name__}")
    return data


def find_data_yaml(data: str | Path) -> Path | str:
    """The data YAML that `data` names: a path as given, else a shipped one by name ('dusia', 'dusia.yaml',
    'data/dusia.yaml'), else one of Ultralytics' own (e.g. 'coco8.yaml', returned as given for Ultralytics to resolve);
    a name that is none of these is a one-line error listing the shipped names."""
    from ultralytics.utils.checks import check_file

    from . import assets

    found = assets.resolve("data", data)
    if found is not None:
        return found
    if Path(str(data)).parent == Path(".") and check_file(str(data), download=False, hard=False):
        return str(data)
    name = Path(str(data))
    if name.suffix in {".yaml", ".yml"} or name.parent == Path("."):
        raise PartialDataError(f"data YAML not found: {data}: expected a path or a shipped name ({assets.names('data')})")
    raise PartialDataError(f"data YAML not found: {data}")


def find_cfg(cfg: str | Path) -> Path:
    """The cfg file that `cfg=` names: a path as given, else a shipped cfg by name ('brl', 'brl.yaml', 'cfg/brl.yaml');
    a one-line error listing the shipped cfgs otherwise."""
    from . import assets

    found = assets.resolve("cfg", cfg)
    if found is None:
        raise PartialDataError(f"cfg file not found: {cfg}: expected a path or a shipped name ({assets.names('cfg')})")
    return found


def resolve_data(data: str | None) -> str:
    """Return the path of a usable Ultralytics data YAML for `data`.

    `None`/'' or 'shapes' selects the embedded dataset; a YAML with a `generator:` key is generated on first use; any
    other YAML is checked for its image folders so that a typo fails before training with the file named.
    """
    from .shapes import ensure_shapes

    if not data or data in {DEFAULT_DATA, f"{DEFAULT_DATA}.yaml"}:
        return str(ensure_shapes("partial"))
    suffix = Path(str(data)).suffix.lower()
    if "://" in str(data) or suffix in OTHER_SOURCES:
        return str(data)  # Ultralytics handles these sources (URLs, archives, NDJSON) itself
    if suffix not in {".yaml", ".yml", ""}:
        raise PartialDataError(f"data={data} is not a data YAML: expected a dataset YAML (path, train, val, names) such as "
                               f"data/shapes.yaml, or a shipped name")
    path = find_data_yaml(data)
    if isinstance(path, str):  # one of Ultralytics' own names, resolved and (online) fetched by Ultralytics
        from .offline import offline

        if offline():
            check_ultralytics_dataset(path)
        return path
    cfg = load_yaml(path, "data YAML")
    if cfg.get("generator") == "shapes":
        return str(ensure_shapes(cfg.get("variant", "partial")))
    if "generator" in cfg:
        raise PartialDataError(f"{path}: unknown generator '{cfg['generator']}': expected 'shapes'")
    check_image_sources(path, cfg)
    return str(path)


def local_data_yaml(data: str) -> Path:
    """`resolve_data` for the commands that read the YAML themselves (split, merge): a file path, Ultralytics' own
    names (coco8.yaml) included."""
    from ultralytics.utils.checks import check_file

    path = resolve_data(data)
    return Path(path if Path(path).is_file() else check_file(path, download=False, hard=False) or path)


def check_ultralytics_dataset(name: str) -> None:
    """Offline, a one-line error when the images of Ultralytics' own dataset `name` (e.g. coco8.yaml) are not on this
    machine: Ultralytics would try to download them."""
    from ultralytics.utils.checks import check_file

    yaml_path = Path(check_file(name, download=False, hard=False))
    cfg = load_yaml(yaml_path, "data YAML")
    root = dataset_root(yaml_path, cfg)
    for split in ("train", "val"):
        missing = [p for p in split_sources(cfg, root, split) if not p.exists()] if cfg.get(split) else [root]
        if missing:
            raise PartialDataError(
                f"data={name}: Ultralytics' {split} images are not on this machine ({missing[0]}) and offline "
                f"(YOLO_OFFLINE=1, yolo-partial's default) nothing is downloaded: expected a local dataset, or "
                f"YOLO_OFFLINE=0 once so that Ultralytics fetches it")


def dataset_file(data_yaml: str | Path, key: str, expected: str) -> Path | None:
    """The file named by a data YAML's top-level `key` (e.g. `hidden:`, `partial:`), or None when it has none.

    Like `train:` and `val:`, the value is relative to the dataset root (the YAML's `path:`, else its folder), so a
    shipped YAML such as data/voc-hard.yaml can name a file inside the dataset it points to; an absolute value stays.
    """
    import os

    data_yaml = Path(data_yaml)
    cfg = load_yaml(data_yaml, "data YAML")
    value = cfg.get(key)
    if value is None:
        return None
    path = Path(os.path.normpath(dataset_root(data_yaml, cfg) / str(value)))
    if not path.is_file():
        raise PartialDataError(f"{data_yaml}: {key}: {value} not found at {path}: expected {expected}")
    return path


def dataset_root(yaml_path: Path, cfg: dict[str, Any]) -> Path:
    """The folder that a data YAML's relative train/val paths refer to, following Ultralytics' rule."""
    root = Path(cfg.get("path") or yaml_path.parent)
    if not root.is_absolute() and not root.exists():
        from ultralytics.utils import DATASETS_DIR

        root = DATASETS_DIR / root
    return root


def split_sources(cfg: dict[str, Any], root: Path, split: str) -> list[Path]:
    """The image folders or list files of a data YAML's `split` (one or a list), relative ones under `root`."""
    sources = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
    return [Path(src) if Path(src).is_absolute() else root / src for src in sources]


def check_image_sources(yaml_path: Path, cfg: dict[str, Any]) -> None:
    """Raise a one-line error when the data YAML's class list is missing, empty or disagrees with its nc, or a train/val
    image source does not exist."""
    class_names(yaml_path, cfg)
    root = dataset_root(yaml_path, cfg)
    for split in ("train", "val"):
        if split not in cfg:
            raise PartialDataError(f"{yaml_path}: missing '{split}': expected an image folder or list file")
        for p in split_sources(cfg, root, split):
            empty = p.is_dir() and not any_image(p)
            if cfg.get("obtain") and (empty or not p.exists()):  # the YAML's one-line recipe, e.g. DUSIA's
                recipe = str(cfg["obtain"]).replace("{root}", str(root))
                raise PartialDataError(f"{yaml_path}: {split} images not found at {p}: {recipe}")
            if empty and split == "train":  # an empty val folder is left to Ultralytics, which validates nothing
                raise PartialDataError(f"{yaml_path}: no {split} images in {p}: expected image files "
                                       f"({', '.join(sorted(IMG_FORMATS))})")
            if not p.exists():
                how = (f"; `yolo-partial download data={yaml_path}` fetches them" if "download" in cfg
                       else "; the comments at the top of the YAML say how to obtain them")
                raise PartialDataError(
                    f"{yaml_path}: {split} images not found at {p}: expected an image folder or a .txt list of images{how}"
                )


def any_image(folder: Path) -> bool:
    """Whether a folder holds at least one image file, at any depth (stops at the first)."""
    return any(f.suffix[1:].lower() in IMG_FORMATS for f in folder.rglob("*.*"))


def explain_no_valid_images(img_path: str | list[str], nc: int) -> None:
    """Raise the one-line reason why Ultralytics found no valid image in `img_path` (a folder, list file or several)."""
    from ultralytics.data.utils import img2label_paths

    sources = img_path if isinstance(img_path, list) else [img_path]
    images = []
    for src in map(Path, sources):
        if src.is_dir():
            images += sorted(str(f) for f in src.rglob("*.*") if f.suffix[1:].lower() in IMG_FORMATS)
        elif src.is_file():
            images += [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines() if ln.strip()]
    for im_file in images:
        lb_file = Path(img2label_paths([im_file])[0])
        problem = label_problem(lb_file, nc) if lb_file.is_file() else None
        if problem:
            raise PartialDataError(f"{lb_file}: malformed labels: {problem}; expected {LABEL_FORMAT} (nc={nc}) "
                                   f"(every image of {img_path} was rejected)")
        reason = image_problem(im_file) if Path(im_file).is_file() else "file not found"
        if reason:
            raise PartialDataError(f"{im_file}: rejected image: {reason} (every image of {img_path} was rejected)")


def check_dropped_labels(dataset) -> None:
    """Raise a one-line error naming the first label file or image that Ultralytics' scan rejected as corrupt.

    Ultralytics drops such images with a warning; partially labelled data is scarce enough that a silently ignored
    file is a bug in the user's conversion, so it stops the run instead.
    """
    from ultralytics.data.utils import img2label_paths, verify_image_label

    kept = set(dataset.im_files)
    dropped = [f for f in dataset.get_img_files(dataset.img_path) if f not in kept]
    if not dropped:
        return
    im_file = dropped[0]
    lb_file = img2label_paths([im_file])[0]
    nc = len(dataset.data["names"])
    more = f" ({len(dropped) - 1} more files rejected)" if len(dropped) > 1 else ""
    problem = label_problem(Path(lb_file), nc) if Path(lb_file).is_file() else None
    if problem:
        yaml_file = dataset.data.get("yaml_file")
        src = f" from {yaml_file}" if yaml_file else ""  # a class beyond nc may be the YAML's fault, not the label's
        raise PartialDataError(f"{lb_file}: malformed labels: {problem}; expected {LABEL_FORMAT} (nc={nc}{src}){more}")
    reason = image_problem(im_file)
    if reason is None:  # the image decodes: Ultralytics rejected it for another reason (e.g. smaller than 10 px)
        msg = verify_image_label((im_file, lb_file, "", False, nc, 0, 0, dataset.single_cls))[-1]
        reason = msg.split("ignoring corrupt image/label: ", 1)[-1].strip()
    raise PartialDataError(f"{im_file}: rejected image: {reason}{more}")


def image_problem(im_file: str) -> str | None:
    """Why Pillow cannot decode an image file, or None when it can.

    Ultralytics' own message for an unidentifiable file names the HEIF plugin it tried as a fallback, not the file's
    problem, so the reason is worked out here.
    """
    from PIL import Image, UnidentifiedImageError

    if Path(im_file).stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(im_file) as im:
            im.load()
    except Image.DecompressionBombError as e:  # Pillow refuses it before decoding: say how large, not "bomb"
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(pixels.group(1)) / 1e6:.0f}M pixels" if pixels else "too many pixels"
        return (f"too large ({size}, above the {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f}M-pixel limit that Pillow keeps "
                f"against decompression bombs): expected a smaller image, resize it")
    except (UnidentifiedImageError, ImportError):  # ImportError: Ultralytics' HEIF fallback is not installed
        return "not an image format Pillow recognises (corrupt header, or not an image)"
    except (OSError, SyntaxError, ValueError) as e:
        return f"corrupt image data ({e})"
    return None


def warn_large_images(dataset) -> int:
    """One warning naming the images above Pillow's decompression-bomb warning size (they train, slowly) -> count.

    Pillow's own warning names neither the file nor what to do; the images themselves are fine to train on.
    """
    from PIL import Image

    large = [(lb["im_file"], lb["shape"]) for lb in dataset.labels
             if lb.get("shape") is not None and lb["shape"][0] * lb["shape"][1] > Image.MAX_IMAGE_PIXELS]
    if large:
        from ultralytics.utils import LOGGER

        (first, (h, w)) = large[0]
        LOGGER.warning(f"{len(large)} images above {Image.MAX_IMAGE_PIXELS / 1e6:.0f}M pixels (first {first}, {w}x{h}): "
                       f"they are read in full and resized every epoch, which is slow; resize them once to save time")
    return len(large)


def drop_zero_area_boxes(dataset) -> int:
    """Remove label boxes with zero width or height from a built dataset, with one warning counting them -> count.

    Such a box covers no pixel: no anchor can be assigned to it, Ultralytics' augmentation discards it, and in
    validation it is a ground truth nobody can match. It usually comes from rounding a tiny box when converting
    labels, so it is dropped rather than stopping the run over the rest of a scarce partially labelled file: the
    object simply counts as unlabelled, which the partial-label methods are built for.
    """
    from ultralytics.data.utils import img2label_paths

    dropped, files, first = 0, 0, None
    for lb in dataset.labels:
        keep = (lb["bboxes"][:, 2] > 0) & (lb["bboxes"][:, 3] > 0)
        if keep.all():
            continue
        dropped, files = dropped + int((~keep).sum()), files + 1
        first = first or img2label_paths([lb["im_file"]])[0]
        lb["bboxes"], lb["cls"] = lb["bboxes"][keep], lb["cls"][keep]
        if len(lb.get("segments") or ()) == len(keep):
            lb["segments"] = [s for s, k in zip(lb["segments"], keep) if k]
    if dropped:
        from ultralytics.utils import LOGGER

        LOGGER.warning(f"{dropped} zero-area label boxes (width or height 0) in {files} label files ignored, the objects "
                       f"count as unlabelled; first in {first}")
    return dropped
