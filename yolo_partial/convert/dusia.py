"""DUSIA -> YOLO layout, prepared the way the dataset's authors prepare it (SPEC section 5).

Each video has one CVAT-for-video XML in which every object is a `<track label=...>` of per-frame `<box>` elements.
A track of exactly two boxes whose second is `outside="1"` is a single-frame *shape*; anything else is a *track*.
Train frames are partially labelled: their boxes come from tracks only. Val and test frames are exhaustively
labelled: their boxes come from shapes only. Boxes with `outside="1"` mark frames where the object is not visible.
Every frame loses its top half; boxes are shifted up, clipped to the kept bottom half and dropped if nothing is left.
The frame size comes from the XML's `<original_size>` (all shared XMLs say 1920x1080), else 1920x1080 is assumed,
and labels are normalised by the kept part (1920x540).

    convert_dusia("dusia/cvat_annos", "dusia/idd_lsts", "datasets/dusia", videos="dusia/videos")
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from ..errors import PartialDataError
from ..labels import data_yaml_text, parse_xml
from ..fileio import atomic_dir
from . import format_table, yolo_line

CLASSES = (  # the 10 detection classes, in this (alphabetical) order of class ids; labels match case-insensitively
    "basket star",
    "fragile pink urchin",
    "gray gorgonian",
    "long legged sunflower star",
    "red swiftia gorgonian",
    "squat lobster",
    "ui laced sponge",
    "white slipper sea cucumber",
    "white spine sea cucumber",
    "yellow gorgonian",
)
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
LISTS = {
    "train": "trainkf_auspec_cvat_frames.txt",
    "val": "valfull_auspec_cvat_frames.txt",
    "test": "testfull_auspec_cvat_frames.txt",
}
KIND = {"train": "track", "val": "shape", "test": "shape"}  # which annotations label each split's frames
DEFAULT_SIZE = (1920, 1080)
FRAME_ID = re.compile(r"(.+)_(\d{7})")  # <video>_<frame number as 7 digits>
COORDS = ("xtl", "ytl", "xbr", "ybr")

Box = tuple[str, str, tuple[float, float, float, float]]  # (kind 'shape'|'track', lower-case label, pixel xyxy)


def read_frame_list(path: Path) -> tuple[list[tuple[str, int]], int]:
    """The (video, frame) entries of one frame list in file order without repeats -> (entries, repeats dropped)."""
    if not path.is_file():
        raise PartialDataError(f"frame list not found: {path}: expected lists= to hold {', '.join(LISTS.values())}")
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = FRAME_ID.fullmatch(line.strip())
        if not m:
            raise PartialDataError(f"{path}: line {n} is '{line.strip()}': expected <video>_<frame number as 7 digits>")
        entries.append((m[1], int(m[2])))
    unique = list(dict.fromkeys(entries))
    return unique, len(entries) - len(unique)


def read_video_xml(path: Path, frames: set[int]) -> tuple[tuple[int, int], str, dict[int, list[Box]], Counter]:
    """Parse one CVAT-for-video XML.

    Returns:
        size (tuple[int, int]): frame (width, height) in pixels.
        size_from (str): 'original_size' (read from the XML) or 'default' (1920x1080 assumed).
        boxes (dict[int, list[Box]]): the visible boxes of each frame in `frames`.
        counts (Counter): 'tracks', 'shapes', 'boxes', 'outside' and 'label:<label>' (objects per label) of the file.
    """
    root = parse_xml(path, "a CVAT for video 1.1 XML")
    if root.tag != "annotations":
        raise PartialDataError(f"{path}: root element is <{root.tag}>: expected a CVAT XML's <annotations>")
    size_el = root.find("./meta//original_size")
    try:
        size = (
            (int(size_el.findtext("width")), int(size_el.findtext("height"))) if size_el is not None else DEFAULT_SIZE
        )
    except (TypeError, ValueError):
        raise PartialDataError(f"{path}: <original_size> needs integer <width> and <height>") from None
    counts, boxes = Counter(), defaultdict(list)
    for track in root.iter("track"):
        label = (track.get("label") or "").strip().lower()
        elements = track.findall("box")
        kind = "shape" if len(elements) == 2 and elements[1].get("outside") == "1" else "track"
        counts.update({f"{kind}s": 1, f"label:{label}": 1, "boxes": len(elements)})
        for box in elements:
            try:
                frame, outside = int(box.get("frame")), box.get("outside") == "1"
                xyxy = tuple(float(box.get(k)) for k in COORDS) if frame in frames and not outside else None
            except (TypeError, ValueError):
                raise PartialDataError(
                    f"{path}: track id={track.get('id')} has a <box> without numeric frame, {', '.join(COORDS)}"
                ) from None
            counts["outside"] += outside
            if xyxy:
                boxes[frame].append((kind, label, xyxy))
    return size, "original_size" if size_el is not None else "default", boxes, counts


def frame_labels(boxes: list[Box], split: str, size: tuple[int, int], stats: Counter) -> list[str]:
    """YOLO label lines of one frame of `split`, cropped to the bottom half; tallies what was left out in `stats`."""
    w, h = size
    top = h // 2  # rows top..h-1 are kept
    lines = []
    for kind, label, (x1, y1, x2, y2) in boxes:
        if kind != KIND[split]:
            stats["other kind"] += 1
        elif label not in CLASS_ID:
            stats["not detection"] += 1
        elif not (line := yolo_line(CLASS_ID[label], (x1, y1 - top, x2, y2 - top), (w, h - top))):
            stats["cropped away"] += 1
        elif line in lines:
            stats["duplicate"] += 1
        else:
            lines.append(line)
            stats[CLASSES[CLASS_ID[label]]] += 1
    return lines


def extract_frames(video: Path, frames: dict[int, Path], size: tuple[int, int]) -> list[int]:
    """Write the bottom half of each listed frame of `video` ({frame: jpg path}) -> frames the video did not hold.

    Reads sequentially (grab() skips frames without converting them): seeking is not frame-exact for every codec.
    """
    import cv2

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise PartialDataError(f"{video}: cannot open the video: expected an .mp4 file that OpenCV can read")
    wanted, index = sorted(frames), 0
    try:
        for n, frame in enumerate(wanted):
            while index < frame and cap.grab():
                index += 1
            ok, img = cap.read() if index == frame else (False, None)
            if not ok:
                return wanted[n:]
            index += 1
            if img.shape[1::-1] != size:
                w, h = img.shape[1::-1]
                raise PartialDataError(f"{video}: frames are {w}x{h}: expected {size[0]}x{size[1]} as in its XML")
            if not cv2.imwrite(str(frames[frame]), img[size[1] // 2 :]):
                raise PartialDataError(f"{frames[frame]}: could not write the JPEG")
    finally:
        cap.release()
    return []


def read_lists(lists: Path) -> tuple[dict[str, dict[int, str]], dict[str, int]]:
    """The three frame lists -> ({video: {frame: split}} in list order, {split: repeated lines dropped}).

    A frame listed in two splits is an error: its label would depend on which list is read last.
    """
    by_video, repeats = defaultdict(dict), {}
    for split, name in LISTS.items():
        entries, repeats[split] = read_frame_list(lists / name)
        for video, frame in entries:
            if frame in by_video[video]:
                other = by_video[video][frame]
                raise PartialDataError(f"{lists}: {video}_{frame:07d} is in both the {other} and {split} lists")
            by_video[video][frame] = split
    return by_video, repeats


def convert_video(
    xml: Path, mp4: Path | None, frames: dict[int, str], tmp: Path, stats: dict
) -> tuple[Counter, list[int]]:
    """Write labels (and images, from `mp4`) of one video's listed frames {frame: split} into `tmp`.

    Returns:
        counts (Counter): what the XML holds (see read_video_xml), plus 'files' and 'size:<w>x<h> from <source>'.
        left (list[int]): frames whose image was not written (no video file, or beyond the video's end).
    """
    size, size_from, boxes, counts = read_video_xml(xml, set(frames))
    for frame, split in frames.items():
        lines = frame_labels(boxes.get(frame, []), split, size, stats[split])
        stats[split].update(frames=1, boxes=len(lines), empty=not lines)
        text = "\n".join(lines) + "\n" if lines else ""
        (tmp / "labels" / split / f"{xml.stem}_{frame:07d}.txt").write_text(text, encoding="utf-8")
    jpgs = {f: tmp / "images" / s / f"{xml.stem}_{f:07d}.jpg" for f, s in frames.items()}
    left = extract_frames(mp4, jpgs, size) if mp4 and mp4.is_file() else sorted(frames)
    return counts + Counter({"files": 1, f"size:{size[0]}x{size[1]} from {size_from}": 1}), left


def convert_dusia(
    annotations: str | Path, lists: str | Path, out: str | Path, videos: str | Path | None = None
) -> dict:
    """Convert DUSIA's XMLs and frame lists (and frames, with `videos`) into YOLO layout under `out`.

    Args:
        annotations: folder of `<video>.xml` CVAT-for-video files (DUSIA's cvat_annos).
        lists: folder holding the three `*_auspec_cvat_frames.txt` frame lists (DUSIA's idd_lsts).
        out: output folder; an earlier output of this tool there is replaced.
        videos: folder of `<video>.mp4`; without it, out/to_extract/<split>.txt lists the frames still to extract.

    Returns:
        (dict): per-split counts ('splits'), XML contents ('xml'), frames of videos without XML ('absent_xml'),
            without .mp4 file ('missing_videos') or beyond the video's end ('short_videos'), frames not extracted per
            split ('to_extract') and repeated list lines ('repeated_list_lines').
    """
    from ultralytics.utils import LOGGER, TQDM

    sources = {"annotations": Path(annotations), "lists": Path(lists), **({"videos": Path(videos)} if videos else {})}
    for key, folder in sources.items():
        if not folder.is_dir():
            raise PartialDataError(f"{key}={folder} is not a folder")
    by_video, repeats = read_lists(sources["lists"])
    xmls = {v: sources["annotations"] / f"{v}.xml" for v in by_video}
    absent = {v: dict(Counter(f.values())) for v, f in by_video.items() if not xmls[v].is_file()}
    if len(absent) == len(by_video):  # an empty dataset would only fail later, at training, with less to go on
        raise PartialDataError(
            f"annotations={sources['annotations']}: no <video>.xml for any of the {len(by_video)} videos that the "
            f"frame lists in {sources['lists']} name: expected DUSIA's cvat_annos folder"
        )
    xml, stats, pending, missing, short = Counter(), {s: Counter() for s in LISTS}, defaultdict(list), {}, {}
    with atomic_dir(out, {"command": "convert dusia", **{k: str(p.absolute()) for k, p in sources.items()}}) as tmp:
        for sub in ("images", "labels"):
            for split in LISTS:
                (tmp / sub / split).mkdir(parents=True)
        for video in TQDM([v for v in by_video if v not in absent], desc="DUSIA videos"):
            mp4 = sources["videos"] / f"{video}.mp4" if videos else None
            counts, left = convert_video(xmls[video], mp4, by_video[video], tmp, stats)
            xml.update(counts)
            for frame in left:
                pending[by_video[video][frame]].append(f"{video} {frame}")
            if mp4 and left:
                (short if mp4.is_file() else missing)[video] = len(left)
        if pending:
            (tmp / "to_extract").mkdir()
            for split, rows in pending.items():
                (tmp / "to_extract" / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
        header = "# DUSIA converted by yolo-partial: frames cropped to their bottom half (SPEC section 5)\n"
        fields = {s: f"images/{s}" for s in LISTS}
        if pending:  # training on this folder says which frames are missing and the command that extracts them
            n = ", ".join(f"{len(rows)} {split}" for split, rows in pending.items())
            fields["obtain"] = (
                f"the DUSIA frames are not extracted yet ({n} frames, listed in {{root}}/to_extract/<split>.txt): run "
                f"`yolo-partial convert dusia annotations={sources['annotations'].absolute()} "
                f"lists={sources['lists'].absolute()} videos=DIR out={Path(out).absolute()}` with DIR holding the "
                f"<video>.mp4 files from the dataset's authors")
        yaml_text = data_yaml_text(fields, CLASSES, header)
        (tmp / "data.yaml").write_text(yaml_text, encoding="utf-8")
    summary = {
        "out": str(Path(out).absolute()),
        "splits": {s: summarise(stats[s]) for s in LISTS},
        "xml": dict(xml),
        "absent_xml": absent,
        "missing_videos": missing,
        "short_videos": short,
        "to_extract": {s: len(pending[s]) for s in LISTS if pending[s]},
        "repeated_list_lines": {s: n for s, n in repeats.items() if n},
    }
    for line in warnings(summary):
        LOGGER.warning(line)
    LOGGER.info(report(summary, videos is not None))
    return summary


def summarise(stats: Counter) -> dict:
    """Per-split summary from the tallies of frame_labels and convert_dusia."""
    frames = stats["frames"]
    return {
        "frames": frames,
        "boxes": stats["boxes"],
        "boxes_per_frame": round(stats["boxes"] / frames, 3) if frames else 0.0,
        "uncropped_boxes_per_frame": round((stats["boxes"] + stats["cropped away"]) / frames, 3) if frames else 0.0,
        "empty_frames": stats["empty"],
        "per_class": {c: stats[c] for c in CLASSES},
        "skipped": {k: stats[k] for k in ("other kind", "not detection", "cropped away", "duplicate")},
    }


def warnings(summary: dict) -> list[str]:
    """One line per video without XML, without video file or too short, and per frame list with repeated lines."""
    lines = [f"no XML for video {v}: its listed frames were skipped {n}" for v, n in summary["absent_xml"].items()]
    lines += [f"{LISTS[s]}: {n} repeated lines ignored" for s, n in summary["repeated_list_lines"].items()]
    lines += [
        f"no video file {v}.mp4: its {n} frames are listed in to_extract/" for v, n in summary["missing_videos"].items()
    ]
    lines += [
        f"{v}.mp4 ends before {n} of its listed frames: listed in to_extract/"
        for v, n in summary["short_videos"].items()
    ]
    return lines


def report(summary: dict, with_videos: bool) -> str:
    """Human-readable text of a convert_dusia summary: what the XMLs hold, what was skipped, per-split counts."""
    xml = summary["xml"]
    labels = {k[6:]: n for k, n in sorted(xml.items()) if k.startswith("label:")}
    other = ", ".join(f"'{k}' {n}" for k, n in labels.items() if k not in CLASS_ID) or "none"
    sizes = ", ".join(f"{k[5:]} in {n}" for k, n in xml.items() if k.startswith("size:"))
    lines = [
        f"DUSIA: {xml.get('files', 0)} XMLs read: {xml.get('shapes', 0)} shapes + {xml.get('tracks', 0)} tracks, "
        f"{xml.get('boxes', 0)} <box> elements ({xml.get('outside', 0)} outside=1, not objects); frame size {sizes}",
        f"objects with labels that are not detection classes (ignored): {other}",
    ]
    splits = summary["splits"]
    rows = {
        s: {
            "frames": v["frames"],
            "boxes": v["boxes"],
            "boxes/frame": float(v["boxes_per_frame"]),
            "uncropped/frame": float(v["uncropped_boxes_per_frame"]),
            "empty frames": v["empty_frames"],
            **v["skipped"],
        }
        for s, v in splits.items()
    }
    columns = ["frames", "boxes", "boxes/frame", "uncropped/frame", "empty frames", *splits["train"]["skipped"]]
    lines += [
        "",
        "boxes left out: of the other kind (shape/track), not a detection class, cropped away, duplicate",
        format_table(rows, columns),
    ]
    per_class = {c: {s: splits[s]["per_class"][c] for s in splits} for c in CLASSES}
    lines += ["", "boxes per class", format_table(per_class, list(splits))]
    if summary["to_extract"]:
        why = "some frames could not be extracted" if with_videos else "no videos= given"
        lines.append(
            f"\n{why}: frames still to extract are listed in {summary['out']}/to_extract/<split>.txt "
            f"{summary['to_extract']}; re-run with videos=DIR holding <video>.mp4 to extract them"
        )
    return "\n".join(lines)
