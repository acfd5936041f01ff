"""`merge`: class-name union and remapping, partial.json from each source's classes and own partial file, folder and
list sources, names=ids, determinism, untouched sources, atomic failure, and that Ultralytics reads the result."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolo_partial.errors import PartialConfigError, PartialDataError
from yolo_partial.merge import merge_datasets, run_merge
from yolo_partial.partial_labels import ImagePartial, load_for_data


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder -> its bytes (a link -> its target), to compare whole outputs."""
    return {str(p.relative_to(folder)): (str(p.readlink()).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def dataset(root: Path, names: list[str], images: dict[str, str | None], extra: str = "",
            files: dict[str, str] | None = None) -> Path:
    """A dataset at root: images {relative path: label text or None (no label file)}, 16x16 JPEGs written with cv2,
    labels where Ultralytics looks; `files` {relative path: text} are written as they are -> its data.yaml."""
    for rel, text in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), np.full((16, 16, 3), len(rel), np.uint8))
        if text is not None:
            label = root / rel.replace("images/", "labels/", 1).rsplit(".", 1)[0]
            label.parent.mkdir(parents=True, exist_ok=True)
            label.with_suffix(".txt").write_text(text)
    for rel, text in (files or {}).items():
        (root / rel).write_text(text)
    (root / "data.yaml").write_text(f"path: {root}\n{extra}names: {json.dumps(names)}\n")
    return root / "data.yaml"


@pytest.fixture()
def sources(tmp_path) -> tuple[Path, Path]:
    """a: folders, [person, car]; b: a .txt train list, [Car, dog], test = its val folder, and its own partial.json."""
    a = dataset(tmp_path / "a", ["person", "car"], {
        "images/train/a1.jpg": "0 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.1\n",
        "images/train/a2.jpg": None,
        "images/val/a3.jpg": "1 0.5 0.5 0.5 0.5\n"}, "train: images/train\nval: images/val\n")
    b = dataset(tmp_path / "b", ["Car", "dog"], {
        "images/b1.jpg": "0 0.1 0.1 0.1 0.1\n1 0.3 0.3 0.1 0.1\n",
        "images/b2.jpg": "0 0.6 0.6 0.2 0.2\n",
        "images/val/b3.jpg": "1 0.5 0.5 0.3 0.3\n"},
        "train: train.txt\nval: images/val\ntest: images/val\npartial: partial.json\n",
        {"train.txt": "./images/b1.jpg\n./images/b2.jpg\n",
         "partial.json": json.dumps({"images": {"images/b1.jpg": {"labeled_classes": ["car"],
                                                                  "ignore": [[0.5, 0.5, 0.2, 0.2]]},
                                                "images/b2.jpg": {"negative_classes": ["DOG"]}}})})
    return a, b


def test_merge_remaps_labels_and_writes_partial(tmp_path, sources):
    a, b = sources
    out = tmp_path / "merged"
    assert run_merge({"data": f"{a},{b}", "out": str(out)}) == out / "data.yaml"
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {"train": ["0-a/images/train", "1-b/train.txt"], "val": ["0-a/images/val", "1-b/images/val"],
                    "test": "1-b/images/val", "partial": "partial.json", "nc": 3,
                    "names": {0: "person", 1: "car", 2: "dog"}}  # fmt: skip
    assert (out / "0-a/labels/train/a1.txt").read_text() == "0 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.1\n"
    assert not (out / "0-a/labels/train/a2.txt").exists()  # a background image stays one
    assert (out / "1-b/labels/b1.txt").read_text() == "1 0.1 0.1 0.1 0.1\n2 0.3 0.3 0.1 0.1\n"  # Car 0->1, dog 1->2
    assert (out / "1-b/labels/val/b3.txt").read_text() == "2 0.5 0.5 0.3 0.3\n"
    assert (out / "1-b/train.txt").read_text() == "./images/b1.jpg\n./images/b2.jpg\n"
    link = out / "1-b/images/b1.jpg"
    assert link.is_symlink() and link.resolve() == b.parent / "images/b1.jpg"
    images = [str(p) for p in out.rglob("*.jpg")]
    p = load_for_data(out / "data.yaml", images)
    assert len(images) == 6 and len(p) == 6
    at = lambda rel: p.for_image(out / rel)  # noqa: E731
    for rel in ("0-a/images/train/a1.jpg", "0-a/images/train/a2.jpg", "0-a/images/val/a3.jpg"):
        assert at(rel) == ImagePartial({0, 1})  # a labels person and car only
    assert at("1-b/images/b1.jpg") == ImagePartial({1}, ignore=[[0.5, 0.5, 0.2, 0.2]])  # b's own entry, remapped
    assert at("1-b/images/b2.jpg") == ImagePartial({1}, {2})  # dog verified absent: still asserted, now negative
    assert at("1-b/images/val/b3.jpg") == ImagePartial({1, 2})


def test_ultralytics_reads_the_merged_dataset(tmp_path, sources):
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    out = tmp_path / "merged"
    merge_datasets(sources, out)
    data = check_det_dataset(str(out / "data.yaml"))
    ds = YOLODataset(img_path=data["train"], data=data, imgsz=32, augment=False, cache=False)
    labels = {Path(lb["im_file"]).name: lb["cls"].ravel().tolist() for lb in ds.labels}
    assert labels == {"a1.jpg": [0, 1], "a2.jpg": [], "b1.jpg": [1, 2], "b2.jpg": [1]}


def test_merge_is_deterministic_and_leaves_sources_untouched(tmp_path, sources):
    before = [tree(s.parent) for s in sources]
    merge_datasets(sources, tmp_path / "m1")
    first = tree(tmp_path / "m1")
    merge_datasets(sources, tmp_path / "m1")  # re-run over its own earlier output
    merge_datasets(sources, tmp_path / "m2")
    assert tree(tmp_path / "m1") == first == tree(tmp_path / "m2")  # byte-identical, wherever it is written
    assert [tree(s.parent) for s in sources] == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_names_ids_and_full_sources(tmp_path, sources):
    a, b = sources
    d = dataset(tmp_path / "d", ["Person", "car", "bird"], {"images/x.jpg": "2 0.5 0.5 0.1 0.1\n"},
                "train: images\nval: images\n")
    merge_datasets([a, d], tmp_path / "ids", names="ids")
    data = yaml.safe_load((tmp_path / "ids/data.yaml").read_text())
    assert data["names"] == {0: "person", 1: "car", 2: "bird"}
    assert (tmp_path / "ids/1-d/labels/x.txt").read_text() == "2 0.5 0.5 0.1 0.1\n"
    p = load_for_data(tmp_path / "ids/data.yaml")
    assert p.for_image(tmp_path / "ids/1-d/images/x.jpg") is None  # d has every merged class: not listed
    assert p.for_image(tmp_path / "ids/0-a/images/train/a1.jpg") == ImagePartial({0, 1})
    with pytest.raises(PartialDataError) as e:
        merge_datasets([a, b], tmp_path / "bad", names="ids")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{b}: class 0 is 'Car' but {a} names class 0 'person'"), msg
    merge_datasets([a, d], tmp_path / "union")  # union: same classes, Person matched to person
    assert yaml.safe_load((tmp_path / "union/data.yaml").read_text())["names"] == data["names"]


@pytest.mark.parametrize("args, error, expect", [
    ({"data": "a.yaml"}, PartialConfigError, "merge needs data=A.yaml,B.yaml[,...] (two or more"),
    ({"data": "a.yaml,b.yaml"}, PartialConfigError, "merge needs out=DIR"),
    ({"data": "a.yaml,b.yaml", "out": "x", "name": "ids"}, PartialConfigError, "unknown key 'name'; did you mean"),
    ({"data": "{a},{b}", "out": "{tmp}/x", "names": "first"}, PartialConfigError, "names=first is invalid"),
    ({"data": "{a},{b}", "out": "{a_root}/merged"}, PartialDataError, "is inside the source dataset"),
    ({"data": "{a},{tmp}/nope.yaml", "out": "{tmp}/x"}, PartialDataError, "data YAML not found: "),
])  # fmt: skip
def test_bad_arguments(tmp_path, sources, args, error, expect):
    a, b = sources
    args = {k: v.format(a=a, b=b, tmp=tmp_path, a_root=a.parent) for k, v in args.items()}
    with pytest.raises(error) as e:
        run_merge(args)
    assert expect in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("breakage, expect", [
    (lambda b: (b.parent / "labels/b2.txt").write_text("0 0.5 0.5 0.2\n"), "b2.txt: malformed labels: line 1 has 4"),
    (lambda b: (b.parent / "partial.json").write_text('{"images": {"images/zz.jpg": {}}}'),
     'image "images/zz.jpg" is not an image of the dataset'),
    (lambda b: b.write_text(b.read_text().replace('["Car", "dog"]', '["Car", "CAR"]')),
     "classes 0 'Car' and 1 'CAR' are the same name up to case"),
])  # fmt: skip
def test_bad_sources_fail_atomically(tmp_path, sources, breakage, expect):
    a, b = sources
    out = tmp_path / "merged"
    merge_datasets(sources, out)
    first = tree(out)
    breakage(b)
    with pytest.raises(PartialDataError) as e:
        merge_datasets(sources, out)
    assert expect in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert tree(out) == first  # the earlier output is intact, and no temporary folder is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "merged"]


def test_cli_merge(tmp_path, sources, capsys):
    from yolo_partial.cli import main

    a, b = sources
    assert main(["merge", f"data={a},{b}", f"out={tmp_path / 'cli'}", "names=union"]) == 0
    assert (tmp_path / "cli/partial.json").is_file()
    assert main(["merge", f"data={a},{b}", f"out={tmp_path / 'x'}", "names=first"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "names=first is invalid: expected one of union|ids" in lines[0], lines
