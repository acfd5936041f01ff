"""Dataset converters: DUSIA on the shared XMLs (counts computed here independently), VOC and COCO on tiny fixtures."""

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import SHARED, one_line_error

from yolo_partial.cli import main
from yolo_partial.convert.coco import convert_coco
from yolo_partial.convert.dusia import convert_dusia
from yolo_partial.convert.voc import convert_voc
from yolo_partial.errors import PartialDataError
from yolo_partial.errors import PartialConfigError

DUSIA = SHARED / "dusia"
DUSIA_LISTS = {"train": "trainkf", "val": "valfull", "test": "testfull"}
DUSIA_NAMES = [
    "basket star", "fragile pink urchin", "gray gorgonian", "long legged sunflower star", "red swiftia gorgonian",
    "squat lobster", "ui laced sponge", "white slipper sea cucumber", "white spine sea cucumber", "yellow gorgonian",
]  # fmt: skip


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder -> its bytes (a link -> its target), to compare whole outputs."""
    return {
        str(p.relative_to(folder)): (str(p.readlink()).encode() if p.is_symlink() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def read_labels(folder: Path) -> dict[str, list[list[float]]]:
    """Label files of one split folder -> {stem: [[cls, cx, cy, w, h], ...]}."""
    return {p.stem: [[float(v) for v in ln.split()] for ln in p.read_text().splitlines()] for p in folder.glob("*.txt")}


def no_leftovers(parent: Path, name: str) -> bool:
    """True when neither `name` nor a temporary sibling of it exists in parent (a failed run left nothing)."""
    return not [p for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]


# ----------------------------------------------------------------------------------------------------------- DUSIA
def dusia_expected() -> dict:
    """SPEC section 5 applied with a plain ElementTree pass: per split {frame id: sorted [cls, cx, cy, w, h] rows}."""
    lists = {
        s: (DUSIA / "idd_lsts" / f"{f}_auspec_cvat_frames.txt").read_text().split() for s, f in DUSIA_LISTS.items()
    }
    videos = {fid.rsplit("_", 1)[0] for ids in lists.values() for fid in ids}
    boxes, other_kind = {}, Counter()  # (video, frame) -> [(is_shape, label, xyxy)]
    for video in videos:
        path = DUSIA / "cvat_annos" / f"{video}.xml"
        if not path.exists():
            continue
        for track in ET.parse(path).getroot().iter("track"):
            bs = track.findall("box")
            is_shape = len(bs) == 2 and bs[1].get("outside") == "1"
            for b in bs:
                if b.get("outside") == "0":
                    xyxy = [float(b.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]
                    boxes.setdefault((video, int(b.get("frame"))), []).append(
                        (is_shape, track.get("label").lower(), xyxy)
                    )
    expected = {}
    for split, ids in lists.items():
        frames = {}
        for fid in ids:
            video, frame = fid.rsplit("_", 1)
            if not (DUSIA / "cvat_annos" / f"{video}.xml").exists():
                continue
            rows = []
            for is_shape, label, (x1, y1, x2, y2) in boxes.get((video, int(frame)), []):
                if is_shape != (split != "train"):
                    other_kind[split] += 1
                elif label in DUSIA_NAMES and min(y2, 1080) > 540:  # the box reaches into the kept bottom half
                    y1, y2 = max(y1, 540) - 540, min(y2, 1080) - 540
                    rows.append(
                        [
                            DUSIA_NAMES.index(label),
                            (x1 + x2) / 3840,
                            (y1 + y2) / 1080,
                            (x2 - x1) / 1920,
                            (y2 - y1) / 540,
                        ]
                    )
            frames[fid] = sorted(rows)
        expected[split] = frames
    return {"frames": expected, "other_kind": other_kind, "lists": lists}


@pytest.fixture(scope="module")
def dusia(tmp_path_factory):
    """The shared DUSIA XMLs converted once (labels only: no videos are shared) and the independent expectation."""
    if not (DUSIA / "cvat_annos").is_dir():
        pytest.skip("../shared/datasets/dusia not present")
    out = tmp_path_factory.mktemp("dusia") / "out"
    summary = convert_dusia(DUSIA / "cvat_annos", DUSIA / "idd_lsts", out)
    return out, summary, dusia_expected()


def test_dusia_counts_per_split(dusia):
    out, summary, exp = dusia
    frames = {s: len(f) for s, f in exp["frames"].items()}
    boxes = {s: sum(map(len, f.values())) for s, f in exp["frames"].items()}
    # SPEC list lengths 8682 / 514 / 677 minus the frames of the videos without XML (train 2979, val 199)
    assert {s: len(ids) for s, ids in exp["lists"].items()} == {"train": 8682, "val": 514, "test": 677}
    assert frames == {"train": 5703, "val": 315, "test": 677}
    assert boxes == {"train": 10087, "val": 1435, "test": 3187}
    for split in DUSIA_LISTS:
        s = summary["splits"][split]
        assert (s["frames"], s["boxes"], sum(s["per_class"].values())) == (frames[split], boxes[split], boxes[split])
        assert s["skipped"]["other kind"] == exp["other_kind"][split] > 0
        assert len(list((out / "labels" / split).glob("*.txt"))) == frames[split]
        assert len((out / "to_extract" / f"{split}.txt").read_text().splitlines()) == frames[split]
    assert summary["xml"]["files"] == 18 and summary["xml"]["shapes"] + summary["xml"]["tracks"] == 12713
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert "path" not in data and data["names"] == dict(enumerate(DUSIA_NAMES)) and data["val"] == "images/val"


def test_dusia_absent_videos_reported(dusia):
    _, summary, exp = dusia
    absent = Counter()
    for split, ids in exp["lists"].items():
        absent.update(
            (fid.rsplit("_", 1)[0], split) for fid in ids if not (DUSIA / f"cvat_annos/{fid[:-8]}.xml").exists()
        )
    assert len({v for v, _ in absent}) == 4
    assert summary["absent_xml"] == {v: {s: n for (v2, s), n in absent.items() if v2 == v} for v, _ in absent}


def test_dusia_labels_follow_shapes_vs_tracks_and_crop(dusia):
    """Every frame's labels are exactly its shape boxes (val/test) or track boxes (train), cropped and normalised."""
    out, _, exp = dusia
    for split, frames in exp["frames"].items():
        got = read_labels(out / "labels" / split)
        assert got.keys() == frames.keys()
        for fid, rows in frames.items():
            assert len(got[fid]) == len(rows), fid
            np.testing.assert_allclose(sorted(got[fid]), rows, atol=1.5e-6, err_msg=fid)
        xywh = np.array([r[1:] for rows in got.values() for r in rows])
        assert (xywh >= 0).all() and (xywh <= 1).all() and (xywh[:, 2:] > 0).all()
        # the whole box lies inside the cropped frame
        assert (xywh[:, :2] - xywh[:, 2:] / 2 >= -1e-6).all() and (xywh[:, :2] + xywh[:, 2:] / 2 <= 1 + 1e-6).all()


def write_cvat(path: Path, size: tuple[int, int] | None, tracks: list[tuple[str, list[tuple[int, int, list]]]]) -> None:
    """A CVAT-for-video XML with tracks [(label, [(frame, outside, [x1, y1, x2, y2])])]."""
    meta = f"<original_size><width>{size[0]}</width><height>{size[1]}</height></original_size>" if size else ""
    body = "".join(
        f'<track id="{i}" label="{label}" source="manual">'
        + "".join(
            f'<box frame="{f}" outside="{o}" occluded="0" keyframe="1" xtl="{x1}" ytl="{y1}" xbr="{x2}" ybr="{y2}"/>'
            for f, o, (x1, y1, x2, y2) in boxes
        )
        + "</track>"
        for i, (label, boxes) in enumerate(tracks)
    )
    path.write_text(
        f'<?xml version="1.0"?><annotations><version>1.1</version><meta><task>{meta}</task></meta>{body}</annotations>'
    )


@pytest.fixture()
def tiny_dusia(tmp_path) -> Path:
    """One 64x48 video 'v1' of 6 frames (frame i: top half white, bottom half grey level 30 * i), XMLs and lists.

    Train frames 1 and 4 of v1, val frame 2 of v1 and val frame 0 of 'v2' (an XML but no video), test frame 9 of v1
    (beyond the video's end).
    """
    (tmp_path / "annos").mkdir()
    (tmp_path / "lists").mkdir()
    (tmp_path / "videos").mkdir()
    writer = cv2.VideoWriter(str(tmp_path / "videos/v1.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(6):
        frame = np.full((48, 64, 3), 30 * i, np.uint8)
        frame[:24] = 255
        writer.write(frame)
    writer.release()
    box, top = [30, 30, 40, 40], [0, 0, 50, 20]  # top: in the cropped-off top half
    write_cvat(tmp_path / "annos/v1.xml", (64, 48), [
        ("Squat lobster", [(1, 0, [8, 12, 40, 36]), (2, 0, [8, 12, 40, 36]), (4, 0, [0, 30, 64, 48]), (5, 1, box)]),
        ("Basket star", [(2, 0, [10, 30, 20, 40]), (3, 1, box)]),  # a shape on val frame 2
        ("Basket star", [(2, 0, [10, 30, 20, 40]), (3, 1, box)]),  # the same shape again
        ("Basket star", [(4, 0, [1, 1, 9, 9]), (5, 1, box)]),  # a shape on train frame 4: not a train label
        ("UI vase sponge", [(1, 0, box), (2, 0, box), (3, 1, box)]),  # a track, not a detection class
        ("UI vase sponge", [(2, 0, box), (3, 1, box)]),  # a shape, not a detection class
        ("gray gorgonian", [(1, 0, top), (2, 0, top), (3, 1, top)]),  # a track
        ("gray gorgonian", [(2, 0, top), (3, 1, top)]),  # a shape
    ])  # fmt: skip
    write_cvat(
        tmp_path / "annos/v2.xml", None, [("yellow gorgonian", [(0, 0, [960, 810, 1920, 1080]), (1, 1, [0, 0, 1, 1])])]
    )
    lists = {
        "trainkf": ["v1_0000001", "v1_0000004", "v1_0000001"],
        "valfull": ["v1_0000002", "v2_0000000"],
        "testfull": ["v1_0000009"],
    }
    for name, ids in lists.items():
        (tmp_path / f"lists/{name}_auspec_cvat_frames.txt").write_text("\n".join(ids) + "\n")
    return tmp_path


def test_dusia_extracts_and_crops_frames_from_videos(tiny_dusia):
    out = tiny_dusia / "out"
    s = convert_dusia(tiny_dusia / "annos", tiny_dusia / "lists", out, videos=tiny_dusia / "videos")
    labels = {split: read_labels(out / "labels" / split) for split in DUSIA_LISTS}
    # v1 crop keeps rows 24..47 (64x24); tracks on train frames, shapes on val frames; v2 has no <original_size>
    assert labels["train"] == {"v1_0000001": [[5, 0.375, 0.25, 0.5, 0.5]], "v1_0000004": [[5, 0.5, 0.625, 1.0, 0.75]]}
    assert labels["val"] == {
        "v1_0000002": [[0, 0.234375, 0.458333, 0.15625, 0.416667]],
        "v2_0000000": [[9, 0.75, 0.75, 0.5, 0.5]],
    }
    assert labels["test"] == {"v1_0000009": []}
    for split, frame in (("train", 1), ("train", 4), ("val", 2)):
        img = cv2.imread(str(out / f"images/{split}/v1_{frame:07d}.jpg"))
        assert img.shape == (24, 64, 3) and abs(img.mean() - 30 * frame) < 6, (split, frame, img.mean())
    assert (
        s["missing_videos"] == {"v2": 1} and s["short_videos"] == {"v1": 1} and s["to_extract"] == {"val": 1, "test": 1}
    )
    assert (out / "to_extract/val.txt").read_text() == "v2 0\n" and (
        out / "to_extract/test.txt"
    ).read_text() == "v1 9\n"
    assert not (out / "to_extract/train.txt").exists()
    assert s["repeated_list_lines"] == {"train": 1}
    assert s["splits"]["train"]["skipped"] == {"other kind": 1, "not detection": 1, "cropped away": 1, "duplicate": 0}
    assert s["splits"]["val"]["skipped"] == {"other kind": 3, "not detection": 1, "cropped away": 1, "duplicate": 1}
    assert s["splits"]["test"]["empty_frames"] == 1
    first = tree(out)
    convert_dusia(tiny_dusia / "annos", tiny_dusia / "lists", out, videos=tiny_dusia / "videos")
    assert tree(out) == first  # re-running replaces the output with an identical one


@pytest.mark.parametrize(
    "breakage, expect",
    [
        (lambda d: (d / "annos/v1.xml").write_text("<annotations><track"), "v1.xml: malformed XML"),
        (lambda d: (d / "lists/valfull_auspec_cvat_frames.txt").write_text("v1_2\n"), "line 1 is 'v1_2'"),
        (
            lambda d: (d / "lists/testfull_auspec_cvat_frames.txt").write_text("v1_0000002\n"),
            "in both the val and test",
        ),
        (lambda d: (d / "lists/trainkf_auspec_cvat_frames.txt").unlink(), "frame list not found"),
    ],
)
def test_dusia_bad_input_is_one_line_error_and_writes_nothing(tiny_dusia, capsys, breakage, expect):
    breakage(tiny_dusia)
    args = [f"annotations={tiny_dusia / 'annos'}", f"lists={tiny_dusia / 'lists'}", f"out={tiny_dusia / 'out'}"]
    assert expect in one_line_error(capsys, "convert", "dusia", *args)
    assert no_leftovers(tiny_dusia, "out")


# ------------------------------------------------------------------------------------------------------------- VOC
VOC_OBJECT = (
    "<object><name>{}</name><difficult>{}</difficult>"
    "<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"
)


def voc_image(
    devkit: Path, year: str, image_id: str, size: tuple[int, int], objects: list[tuple], xml_size=True
) -> None:
    """One JPEG (w x h) and its annotation XML (with <size> if xml_size) with [(name, difficult, x1, y1, x2, y2)]."""
    voc = devkit / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(voc / f"JPEGImages/{image_id}.jpg"), np.full((size[1], size[0], 3), 90, np.uint8))
    objs = "".join(VOC_OBJECT.format(*o) for o in objects)
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if xml_size else ""
    (voc / f"Annotations/{image_id}.xml").write_text(f"<annotation>{size_xml}{objs}</annotation>")


@pytest.fixture()
def devkit(tmp_path) -> Path:
    """VOC2007 (trainval 000001, 000002; test 000003) and VOC2012 (trainval 000001: the same id as a 2007 image;
    its XML has no <size>)."""
    d = tmp_path / "VOCdevkit"
    voc_image(d, "2007", "000001", (100, 80), [("dog", 0, 11, 21, 51, 61), ("person", 1, 1, 1, 100, 80)])
    voc_image(d, "2007", "000002", (50, 50), [("unicorn", 0, 5, 5, 10, 10), ("cat", 0, 20, 20, 20, 30)])
    voc_image(d, "2007", "000003", (64, 32), [("tvmonitor", 0, 33, 1, 64, 16)])
    voc_image(d, "2012", "000001", (40, 40), [("aeroplane", 0, 1, 1, 21, 45)], xml_size=False)  # size from the JPEG
    (d / "VOC2007/ImageSets/Main/trainval.txt").write_text("000001\n000002\n")
    (d / "VOC2007/ImageSets/Main/test.txt").write_text("000003\n")
    (d / "VOC2012/ImageSets/Main/trainval.txt").write_text("000001\n")
    return d


def test_voc_labels_and_counts(devkit, tmp_path):
    from ultralytics.data.utils import verify_image_label

    out = tmp_path / "voc"
    s = convert_voc(devkit, out)
    assert (out / "labels/train/2007_000001.txt").read_text() == (
        "11 0.300000 0.500000 0.400000 0.500000\n"  # dog: (11-1, 21-1, 51-1, 61-1) in 100x80
        "14 0.495000 0.493750 0.990000 0.987500\n"  # person, difficult, kept: (0, 0, 99, 79)
    )
    assert (out / "labels/train/2007_000002.txt").read_text() == ""  # unknown class and zero-width box left out
    assert (out / "labels/train/2012_000001.txt").read_text() == "0 0.250000 0.500000 0.500000 1.000000\n"  # clipped
    assert (out / "labels/test/2007_000003.txt").read_text() == "19 0.742188 0.234375 0.484375 0.468750\n"
    assert (out / "images/train/2012_000001.jpg").resolve() == (devkit / "VOC2012/JPEGImages/000001.jpg").resolve()
    assert s["train"]["sources"] == ["VOC2007 trainval", "VOC2012 trainval"]
    counts = {"images": 3, "boxes": 3, "difficult": 1, "empty": 1, "zero-size": 1, "unknown class 'unicorn'": 1}
    assert {k: s["train"][k] for k in counts} == counts
    assert (s["test"]["images"], s["test"]["boxes"]) == (1, 1)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert (data["train"], data["val"], data["test"], data["names"][19]) == (
        "images/train",
        "images/test",
        "images/test",
        "tvmonitor",
    )
    for im in (out / "images/train").iterdir():  # Ultralytics accepts every image/label pair
        nm, nf, ne, nc, msg = verify_image_label(
            (str(im), str(out / f"labels/train/{im.stem}.txt"), "", False, 20, 0, 0, False)
        )[5:]
        assert (nm, nf, nc, msg) == (0, 1, 0, ""), msg


def test_voc_rerun_identical_and_missing_image_warned(devkit, tmp_path):
    out = tmp_path / "voc"
    convert_voc(devkit, out)
    first = tree(out)
    convert_voc(devkit, out)
    assert tree(out) == first
    (devkit / "VOC2007/JPEGImages/000002.jpg").unlink()
    s = convert_voc(devkit, out)
    assert (s["train"]["images"], s["train"]["missing images"]) == (2, 1)
    assert not (out / "labels/train/2007_000002.txt").exists()


@pytest.mark.parametrize(
    "breakage, expect",
    [
        (
            lambda d: (d / "VOC2007/Annotations/000002.xml").write_text("<annotation><object>"),
            "000002.xml: malformed XML",
        ),
        (lambda d: (d / "VOC2007/Annotations/000003.xml").unlink(), "000003.xml: annotation not found"),
        (lambda d: (d / "VOC2007/ImageSets/Main/test.txt").unlink(), "no test image set"),
        (lambda d: (d / "VOC2007/JPEGImages/000003.jpg").unlink(), "no test image found (first missing:"),
    ],
)
def test_voc_bad_input(devkit, tmp_path, capsys, breakage, expect):
    breakage(devkit)
    assert expect in one_line_error(capsys, "convert", "voc", f"root={devkit}", f"out={tmp_path / 'out'}")
    assert no_leftovers(tmp_path, "out")


# ------------------------------------------------------------------------------------------------------------ COCO
def coco_fixture(root: Path, split: str, extra_images: int = 0) -> Path:
    """instances_<split>.json with categories 1, 3, 90 and images a (80x60), b (100x100), c (no annotations),
    d (listed, no file), an image entry repeated and annotations of every kind; the image files in root/<split>."""
    (root / split).mkdir(parents=True)
    images = [("a.jpg", 80, 60), ("b.jpg", 100, 100), ("c.jpg", 40, 40), ("d.jpg", 10, 10)]
    images += [(f"e{i}.jpg", 10, 10) for i in range(extra_images)]
    for name, w, h in images[:3] + images[4:]:
        cv2.imwrite(str(root / split / name), np.zeros((h, w, 3), np.uint8))
    data = {
        "images": [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, w, h) in enumerate(images)]
        + [{"id": 1, "file_name": "a.jpg", "width": 80, "height": 60}],  # the same image entry twice
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 90, "bbox": [8, 6, 16, 12], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [70, 50, 20, 20], "iscrowd": 0},  # clipped at 80x60
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1},  # crowd
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [10, 10, 0, 5], "iscrowd": 0},  # zero width
            {"id": 5, "image_id": 2, "category_id": 7, "bbox": [10, 10, 5, 5], "iscrowd": 0},  # unknown category
            {"id": 6, "image_id": 2, "category_id": 1, "bbox": [0, 0, 50, 100]},  # no iscrowd key
            {"id": 7, "image_id": 4, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0},  # image file missing
            {"id": 8, "image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0},  # unknown image id
        ],
    }
    path = root / f"instances_{split}.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_labels_counts_and_crowd_option(tmp_path):
    ann = coco_fixture(tmp_path, "val2017")
    out = tmp_path / "coco"
    s = convert_coco(ann, tmp_path / "val2017", out)
    labels = {p.name: p.read_text() for p in (out / "labels/val2017").iterdir()}
    assert labels == {
        "a.txt": "2 0.200000 0.200000 0.200000 0.200000\n0 0.937500 0.916667 0.125000 0.166667\n",
        "b.txt": "0 0.250000 0.500000 0.500000 1.000000\n",
        "c.txt": "",
    }
    expected = {"images": 3, "boxes": 3, "empty": 1, "crowd skipped": 1, "crowd kept": 0, "zero-size": 1,
                "unknown category": 1, "unknown image id": 1, "missing images": 1, "boxes of missing images": 1,
                "repeated ids": 1}  # fmt: skip
    assert {k: s[k] for k in expected} == expected and s["split"] == "val2017"
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {"val": "images/val2017", "nc": 3, "names": {0: "person", 1: "car", 2: "toothbrush"}}
    s = convert_coco(ann, tmp_path / "val2017", out, crowd="keep")
    assert (s["crowd skipped"], s["crowd kept"], s["boxes"]) == (0, 1, 4)
    assert (out / "labels/val2017/a.txt").read_text().splitlines()[2] == "1 0.250000 0.250000 0.500000 0.500000"


def test_coco_splits_fill_one_folder(tmp_path):
    out = tmp_path / "coco"
    val = coco_fixture(tmp_path, "val2017")
    train = coco_fixture(tmp_path, "train2017", extra_images=2)
    convert_coco(val, tmp_path / "val2017", out)
    val_files = tree(out / "labels/val2017") | tree(out / "images/val2017")
    s = convert_coco(train, tmp_path / "train2017", out)
    assert s["splits"] == ["train2017", "val2017"] and s["images"] == 5
    assert tree(out / "labels/val2017") | tree(out / "images/val2017") == val_files  # carried over unchanged
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert (data["train"], data["val"]) == ("images/train2017", "images/val2017")
    marker = json.loads((out / ".yolo-partial.json").read_text())
    assert sorted(marker["splits"]) == ["train2017", "val2017"]
    convert_coco(train, tmp_path / "train2017", out, crowd="keep")  # replaces the train split only
    assert (out / "labels/train2017/a.txt").read_text().count("\n") == 3
    assert tree(out / "labels/val2017") == {k: v for k, v in val_files.items() if k.endswith(".txt")}
    first = tree(out)
    convert_coco(train, tmp_path / "train2017", out, crowd="keep")
    assert tree(out) == first


@pytest.mark.parametrize(
    "breakage, expect",
    [
        (lambda p: p.write_text('{"images": [], "annotations": ['), "instances_val2017.json: malformed JSON (line 1"),
        (lambda p: p.write_text("[1, 2]"), "expected a JSON object with 'images', 'annotations' and 'categories'"),
        (
            lambda p: p.write_text(p.read_text().replace('"bbox": [0, 0, 50, 100]', '"bbox": "x"')),
            "annotations[5] needs",
        ),
        (lambda p: [f.unlink() for f in (p.parent / "val2017").iterdir()], "holds none of the 4 images"),
    ],
)
def test_coco_bad_input(tmp_path, capsys, breakage, expect):
    ann = coco_fixture(tmp_path, "val2017")
    breakage(ann)
    args = [f"annotations={ann}", f"images={tmp_path / 'val2017'}", f"out={tmp_path / 'out'}"]
    assert expect in one_line_error(capsys, "convert", "coco", *args)
    assert no_leftovers(tmp_path, "out")


def test_coco_refuses_other_outputs(tmp_path, devkit):
    convert_voc(devkit, tmp_path / "voc")
    ann = coco_fixture(tmp_path, "val2017")
    with pytest.raises(PartialDataError, match="holds a 'convert voc' output"):
        convert_coco(ann, tmp_path / "val2017", tmp_path / "voc")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("x")
    with pytest.raises(PartialConfigError, match="was not written by yolo-partial"):
        convert_coco(ann, tmp_path / "val2017", tmp_path / "mine")
    assert (tmp_path / "mine/notes.txt").read_text() == "x"


# ------------------------------------------------------------------------------------------------------------- CLI
def test_cli_convert(capsys, devkit, tmp_path):
    assert "convert needs a dataset kind: expected 'yolo-partial convert dusia|voc|coco|lvis" in one_line_error(
        capsys, "convert")
    assert main(["convert", "help"]) == 0 and "crowd=skip|keep" in capsys.readouterr().out
    assert main(["convert", "voc", f"root={devkit}", f"out={tmp_path / 'voc'}"]) == 0
    assert (tmp_path / "voc/labels/test/2007_000003.txt").is_file()
    assert "unknown converter 'kitti'" in one_line_error(capsys, "convert", "kitti", "out=x")
    assert "unknown key 'roots'; did you mean root" in one_line_error(capsys, "convert", "voc", "roots=x", "out=y")
    assert "convert coco needs images=..." in one_line_error(capsys, "convert", "coco", "annotations=a.json", "out=y")
    (tmp_path / "file").write_text("")  # an out= that cannot be created: the system's reason, one line
    assert "File exists" in one_line_error(capsys, "convert", "voc", f"root={devkit}", f"out={tmp_path / 'file/voc'}")
    assert "crowd=maybe is invalid" in one_line_error(
        capsys, "convert", "coco", "annotations=a", "images=b", "out=c", "crowd=maybe"
    )


def test_training_before_frames_are_extracted_says_how(dusia, capsys):
    """`convert dusia` without videos= writes labels only: training on it names the missing frames and the command."""
    out, summary, _ = dusia
    line = one_line_error(capsys, "train", f"data={out / 'data.yaml'}", "epochs=1", f"project={out.parent / 'runs'}")
    assert "the DUSIA frames are not extracted yet" in line and f"listed in {out}/to_extract/<split>.txt" in line
    assert f"yolo-partial convert dusia annotations={DUSIA / 'cvat_annos'}" in line and f"out={out}" in line
    assert "videos=DIR" in line and "\x1b[" not in line
    assert not (out.parent / "runs").exists()
