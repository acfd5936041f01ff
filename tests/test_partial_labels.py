"""The `partial:` file (schema, validation, lookups, masks) and the converters that write one (COCO crowd, LVIS)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from yolo_partial.cli import main
from yolo_partial.convert.coco import convert_coco
from yolo_partial.convert.lvis import convert_lvis
from yolo_partial.errors import PartialDataError
from yolo_partial.partial_labels import (
    FORMAT,
    ImagePartial,
    class_mask,
    find_partial,
    image_key,
    load_for_data,
    load_partial,
    write_partial,
)

NAMES = {0: "person", 1: "Car", 2: "dog"}


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder -> its bytes (a link -> its target), to compare whole outputs."""
    return {str(p.relative_to(folder)): (str(p.readlink()).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def write(path: Path, data) -> Path:
    """Write a JSON (or raw text) fixture -> its path."""
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# ----------------------------------------------------------------------------------------------------- schema, load
def test_load_lookups_and_class_mask(tmp_path):
    (tmp_path / "real/images").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    path = write(tmp_path / "real/partial.json", {"format": FORMAT, "images": {
        "images/a.jpg": {"labeled_classes": [0, "car"], "negative_classes": ["DOG"]},
        "images/b.jpg": {"labeled_classes": [], "ignore": [[0.5, 0.5, 0.2, 0.1], [0.1, 0.1, 0, 0.1]]},
        "images/c.jpg": {},
    }})
    p = load_partial(path, NAMES)
    assert len(p) == 3 and p.dropped == 1  # the zero-width ignore box is dropped, counted
    a, b = p.for_image(tmp_path / "real/images/a.jpg"), p.for_image(str(tmp_path / "real/images/b.jpg"))
    assert (a.labeled, a.negative, a.ignore.shape) == ({0, 1}, {2}, (0, 4))
    assert b.labeled == set() and b.ignore.tolist() == [[0.5, 0.5, pytest.approx(0.2), pytest.approx(0.1)]]
    assert p.for_image(tmp_path / "link/images/a.jpg") == a  # a linked folder finds the same entry
    assert p.for_image(tmp_path / "real/images/../images/a.jpg") == a
    assert p.for_image(tmp_path / "real/images/z.jpg") is None  # not listed: fully labelled
    assert p.for_image(tmp_path / "real/images/c.jpg").is_full
    mask = class_mask([a, b, None, p.for_image(tmp_path / "real/images/c.jpg")], 3)
    assert mask.dtype == torch.bool and mask.tolist() == [[True, True, True], [False, False, False],
                                                          [True, True, True], [True, True, True]]
    partial_a = ImagePartial({1}, {2})
    assert class_mask([partial_a], 4).tolist() == [[False, True, True, False]]
    assert p.lists([tmp_path / "link/images/b.jpg"]) and not p.lists([tmp_path / "real/images/z.jpg"])


def test_write_round_trip_is_deterministic(tmp_path):
    entries = {"images/b.jpg": ImagePartial(set(), {2}, [[0.25, 0.5, 0.1, 0.2]]), "images/a.jpg": ImagePartial({1}),
               "images/full.jpg": ImagePartial(), "x/c.png": {"labeled_classes": ["person"]}}
    write_partial(tmp_path / "p.json", entries, list(NAMES.values()), source="test")
    text = (tmp_path / "p.json").read_text()
    assert "full.jpg" not in text and text.index("a.jpg") < text.index("b.jpg")  # sorted, no-op entries left out
    data = json.loads(text)
    assert data["format"] == FORMAT and data["names"] == ["person", "Car", "dog"] and data["source"] == "test"
    p = load_partial(tmp_path / "p.json", NAMES)
    assert p.entries == {"images/a.jpg": ImagePartial({1}), "images/b.jpg": entries["images/b.jpg"],
                         "x/c.png": ImagePartial({0})}
    write_partial(tmp_path / "q.json", p.entries, list(NAMES.values()), source="test")
    assert load_partial(tmp_path / "q.json", NAMES).entries == p.entries
    write_partial(tmp_path / "r.json", dict(reversed(p.entries.items())), list(NAMES.values()), source="test")
    assert (tmp_path / "r.json").read_bytes() == (tmp_path / "q.json").read_bytes()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # atomic: no temporary file left


def test_find_partial_follows_the_dataset_root(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images/a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "cfg").mkdir()
    cfg = tmp_path / "cfg/data.yaml"
    cfg.write_text(f"path: {root}\ntrain: images\nval: images\nnames: [person, Car, dog]\n")
    assert find_partial(cfg) is None and load_for_data(cfg) is None
    cfg.write_text(cfg.read_text() + "partial: meta/partial.json\n")
    with pytest.raises(PartialDataError, match=r"data.yaml: partial: meta/partial.json not found at .*ds/meta"):
        find_partial(cfg)
    (root / "meta").mkdir()
    write(root / "meta/partial.json", {"images": {"images/a.jpg": {"labeled_classes": ["dog"]}}})
    assert find_partial(cfg) == root / "meta/partial.json"
    p = load_for_data(cfg, [str(root / "images/a.jpg")])  # keys relative to the dataset root, not the file's folder
    assert p.for_image(root / "images/a.jpg").labeled == {2}
    with pytest.raises(PartialDataError, match=r"image \"images/a.jpg\" is not an image of the dataset"):
        load_for_data(cfg, [str(root / "images/b.jpg")])


@pytest.mark.parametrize("content, expect", [
    ('{"images": {"a.jpg": {', "malformed JSON (line 1"),
    ("[1, 2]", "expected a JSON object"),
    ({"image": {}}, "'images' is missing or not an object"),
    ({"images": {}}, None),  # no entries: every image fully labelled
    ({"images": []}, "'images' is missing or not an object"),
    ({"images": [["a.jpg", {}]]}, "'images' is missing or not an object"),
    ({"format": "yolo-partial-manifest/1", "images": {}}, "format 'yolo-partial-manifest/1': expected"),
    ({"names": ["a", "b", "c"], "images": {}}, "written for classes ['a', 'b', 'c'], but the dataset names"),
    ({"images": {"a.jpg": []}}, 'images["a.jpg"] is not an object'),
    ({"images": {"a.jpg": {"labelled_classes": [0]}}}, "unknown key 'labelled_classes'; did you mean labeled_classes?"),
    ({"images": {"a.jpg": {"labeled_classes": [3]}}}, "labeled_classes has unknown class 3: expected an id in [0, 3)"),
    ({"images": {"a.jpg": {"negative_classes": ["cat"]}}}, "negative_classes has unknown class 'cat'"),
    ({"images": {"a.jpg": {"labeled_classes": [True]}}}, "unknown class True"),
    ({"images": {"a.jpg": {"labeled_classes": 0}}}, "labeled_classes is not a list"),
    ({"images": {"a.jpg": {"labeled_classes": [0, 1], "negative_classes": ["car"]}}},
     "class 1 is both labelled and negative"),
    ({"images": {"a.jpg": {"ignore": [[0.5, 0.5, 1.2, 0.1]]}}}, "ignore[0] is [0.5, 0.5, 1.2, 0.1]: expected"),
    ({"images": {"a.jpg": {"ignore": [[0.5, 0.5, 0.1]]}}}, "ignore[0] is [0.5, 0.5, 0.1]"),
    ('{"images": {"a.jpg": {"ignore": [[0.5, NaN, 0.1, 0.1]]}}}', "ignore[0] is [0.5, NaN, 0.1, 0.1]"),
    ({"images": {"a.jpg": {"ignore": [0.5, 0.5, 0.1, 0.1]}}}, "ignore[0] is 0.5"),
    ('{"images": {"a.jpg": {}, "./a.jpg": {}}}', 'images["./a.jpg"] names an image listed before'),
    ({"images": {"": {}}}, "an image key is empty"),
])  # fmt: skip
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, content, expect):
    path = write(tmp_path / "partial.json", content)
    if expect is None:
        assert len(load_partial(path, NAMES)) == 0
        return
    with pytest.raises(PartialDataError) as e:
        load_partial(path, NAMES)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)) and expect in msg, msg


def test_missing_file_and_unknown_images(tmp_path):
    with pytest.raises(PartialDataError, match="partial annotation file not found: .*nope.json"):
        load_partial(tmp_path / "nope.json", NAMES)
    path = write(tmp_path / "partial.json", {"images": {"a.jpg": {}, "b.jpg": {}, "c.jpg": {}}})
    load_partial(path, NAMES, [str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")])
    with pytest.raises(PartialDataError, match=r'partial.json: image "b.jpg" \(1 more\) is not an image of the data'):
        load_partial(path, NAMES, [str(tmp_path / "a.jpg")])


# ----------------------------------------------------------------------------------------------------- COCO crowds
def coco_json(root: Path, split: str) -> Path:
    """instances_<split>.json: categories 1 (person), 3 (car); image a (100x50) with a person, a crowd of people and a
    crowd that clips to nothing; image b (40x40) with a car; the image files in root/<split>."""
    (root / split).mkdir(parents=True)
    for name, w, h in (("a.jpg", 100, 50), ("b.jpg", 40, 40)):
        cv2.imwrite(str(root / split / name), np.zeros((h, w, 3), np.uint8))
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50},
                   {"id": 2, "file_name": "b.jpg", "width": 40, "height": 40}],
        "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 0, 50, 25], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [200, 0, 5, 5], "iscrowd": 1},  # outside: zero-size
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [0, 0, 20, 40], "iscrowd": 0},
        ],
    }  # fmt: skip
    return write(root / f"instances_{split}.json", data)


def test_coco_crowd_ignore_writes_ignore_boxes(tmp_path):
    val, train, out = coco_json(tmp_path, "val2017"), coco_json(tmp_path, "train2017"), tmp_path / "coco"
    s = convert_coco(val, tmp_path / "val2017", out, crowd="ignore")
    assert (s["crowd ignored"], s["crowd skipped"], s["zero-size"], s["boxes"]) == (1, 0, 1, 2)
    assert (out / "labels/val2017/a.txt").read_text() == "0 0.200000 0.300000 0.200000 0.200000\n"  # crowd not a box
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["partial"] == "partial.json" and data["names"] == {0: "person", 1: "car"}
    p = load_for_data(out / "data.yaml", [str(f) for f in (out / "images/val2017").iterdir()])
    assert p.for_image(out / "images/val2017/a.jpg") == ImagePartial(ignore=[[0.75, 0.25, 0.5, 0.5]])
    assert p.for_image(out / "images/val2017/b.jpg") is None and len(p) == 1
    convert_coco(train, tmp_path / "train2017", out)  # crowd=skip: the val split keeps its ignore boxes
    p = load_partial(out / "partial.json", {0: "person", 1: "car"})
    assert list(p.entries) == ["images/val2017/a.jpg"]
    assert yaml.safe_load((out / "data.yaml").read_text())["partial"] == "partial.json"
    convert_coco(val, tmp_path / "val2017", out)  # val again without ignore: nothing partial is left
    assert not (out / "partial.json").exists() and "partial" not in yaml.safe_load((out / "data.yaml").read_text())
    convert_coco(val, tmp_path / "val2017", out, crowd="ignore")
    first = tree(out)
    convert_coco(val, tmp_path / "val2017", out, crowd="ignore")
    assert tree(out) == first


# ------------------------------------------------------------------------------------------------------------ LVIS
def lvis_json(root: Path, split: str, ids: range) -> Path:
    """lvis_v1_<split>.json over COCO images root/train2017/<id>.jpg and root/val2017/<id>.jpg (id 4 listed, absent).

    Categories 1 'apple', 2 'bus', 5 'cat'. Image 1: apple and bus boxed, bus not exhaustive, cat negative. Image 2:
    no boxes, bus and an unknown category 9 negative. Image 3 (val2017 folder): a cat box while cat is also listed
    negative (kept as labelled). Image 4: file missing.
    """
    folders = {1: "train2017", 2: "train2017", 3: "val2017", 4: "val2017"}
    for i in ids:
        if i != 4:
            (root / folders[i]).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folders[i] / f"{i:012d}.jpg"), np.zeros((50, 100, 3), np.uint8))
    lists = {1: ([2], [5]), 2: ([], [2, 9]), 3: ([], [5]), 4: ([], [])}
    images = [{"id": i, "coco_url": f"http://images.cocodataset.org/{folders[i]}/{i:012d}.jpg", "width": 100,
               "height": 50, "not_exhaustive_category_ids": lists[i][0], "neg_category_ids": lists[i][1]} for i in ids]
    anns = [(1, 1, [0, 0, 50, 25]), (1, 2, [50, 25, 50, 25]), (1, 2, [0, 25, 10, 10]), (3, 5, [10, 10, 20, 20]),
            (4, 1, [0, 0, 5, 5])]
    data = {"images": images,
            "categories": [{"id": 5, "name": "cat"}, {"id": 1, "name": "apple"}, {"id": 2, "name": "bus"}],
            "annotations": [{"id": n, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3]}
                            for n, (i, c, b) in enumerate(anns) if i in ids]}
    return write(root / f"lvis_v1_{split}.json", data)


def test_lvis_labels_and_partial(tmp_path):
    coco, out = tmp_path / "coco", tmp_path / "lvis"
    val = lvis_json(coco, "val", range(1, 5))
    s = convert_lvis(val, coco, out)
    expected = {"split": "val", "images": 3, "boxes": 4, "empty": 1, "missing images": 1, "boxes of missing images": 1,
                "labeled classes": 2, "negative classes": 2, "not exhaustive": 1, "negative with boxes": 1,
                "unknown listed category": 1, "splits": ["val"]}  # fmt: skip
    assert {k: s[k] for k in expected} == expected
    assert sorted(p.name for p in (out / "images/val").iterdir()) == [f"{i:012d}.jpg" for i in (1, 2, 3)]
    assert (out / "labels/val/000000000001.txt").read_text().splitlines() == [
        "0 0.250000 0.250000 0.500000 0.500000", "1 0.750000 0.750000 0.500000 0.500000",
        "1 0.050000 0.600000 0.100000 0.200000"]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {"val": "images/val", "partial": "partial.json", "nc": 3, "names": {0: "apple", 1: "bus", 2: "cat"}}
    p = load_for_data(out / "data.yaml", [str(f) for f in (out / "images/val").iterdir()])
    entry = {i: p.for_image(out / f"images/val/{i:012d}.jpg") for i in (1, 2, 3)}
    assert entry[1] == ImagePartial({0}, {2})  # apple exhaustive; bus boxed but not exhaustive: unknown; cat negative
    assert entry[2] == ImagePartial(set(), {1})  # nothing boxed, bus verified absent (category 9 is unknown)
    assert entry[3] == ImagePartial({2})  # a boxed cat listed negative stays labelled
    assert class_mask([entry[1], entry[2], entry[3]], 3).tolist() == [
        [True, False, True], [False, True, False], [False, False, True]]


def test_lvis_splits_fill_one_folder_and_rerun_is_identical(tmp_path):
    coco, out = tmp_path / "coco", tmp_path / "lvis"
    val, train = lvis_json(coco, "val", range(1, 5)), lvis_json(coco, "train", range(1, 3))
    convert_lvis(val, coco, out)
    s = convert_lvis(train, coco, out)
    assert s["splits"] == ["train", "val"]
    p = load_partial(out / "partial.json", {0: "apple", 1: "bus", 2: "cat"})
    assert sorted(p.entries) == [f"images/{s}/{i:012d}.jpg" for s, ids in (("train", (1, 2)), ("val", (1, 2, 3)))
                                 for i in ids]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert (data["train"], data["val"], data["partial"]) == ("images/train", "images/val", "partial.json")
    first = tree(out)
    convert_lvis(train, coco, out)
    assert tree(out) == first


@pytest.mark.parametrize("breakage, expect", [
    (lambda d: d["images"][0].pop("coco_url"), "images[0] needs a 'coco_url' (or a 'file_name')"),
    (lambda d: d["images"][1].update(neg_category_ids=5), "images[1] 'neg_category_ids' is not a list of category"),
    (lambda d: d.pop("categories"), "expected a JSON object with 'images', 'annotations' and 'categories' lists"),
])  # fmt: skip
def test_lvis_bad_input_is_one_line_error_and_writes_nothing(tmp_path, capsys, breakage, expect):
    coco = tmp_path / "coco"
    path = lvis_json(coco, "val", range(1, 5))
    data = json.loads(path.read_text())
    breakage(data)
    write(path, data)
    rc = main(["convert", "lvis", f"annotations={path}", f"images={coco}", f"out={tmp_path / 'out'}"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and expect in lines[0] and "lvis_v1_val.json" in lines[0], lines
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))]


def test_lvis_refuses_a_coco_output_and_is_listed_in_help(tmp_path, capsys):
    convert_coco(coco_json(tmp_path, "val2017"), tmp_path / "val2017", tmp_path / "out")
    path = lvis_json(tmp_path / "coco", "val", range(1, 3))
    with pytest.raises(PartialDataError, match="holds a 'convert coco' output: expected a new folder or a LVIS one"):
        convert_lvis(path, tmp_path / "coco", tmp_path / "out")
    assert main(["convert", "help"]) == 0
    usage = capsys.readouterr().out
    assert "convert lvis annotations=" in usage and "crowd=skip|keep|ignore" in usage


def test_image_key_keeps_file_links(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    assert image_key(tmp_path / "b.jpg") != image_key(tmp_path / "a.jpg")  # two links may carry different labels
