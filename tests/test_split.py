"""The partial-annotation split generator (yolo_partial.split) on the real shared datasets and on bad input.

Expected counts are computed here from the source labels, independently of the module's code.
"""

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import AQUARIUM, SHARED, one_line_error

from yolo_partial import split as split_mod
from yolo_partial.fileio import MARKER
from yolo_partial.split import default_out, split_dataset

DATASETS = ("aquarium", "coco128")
LOCAL_RULES = {  # boxes an image with n boxes keeps, per image-by-image rule
    ("easy", None): lambda n: n - 1 if n >= 2 else n,
    ("hard", None): lambda n: n - n // 2,
    ("extreme", None): lambda n: min(n, 1),
    ("keep", 0.0): lambda n: n if n == 1 else 0,
    ("keep", 1.0): lambda n: n,
}


def source_labels(root: Path) -> dict[str, list[str] | None]:
    """{'images/train/<image>': label lines (None without a label file)} of a YOLO-layout dataset's train split."""
    labels = {}
    for image in sorted((root / "images" / "train").iterdir()):
        lb = root / "labels" / "train" / f"{image.stem}.txt"
        lines = [x for x in lb.read_text().splitlines() if x.strip()] if lb.exists() else None
        labels[f"images/train/{image.name}"] = lines
    return labels


def boxes(lines) -> list[tuple[float, ...]]:
    """Label lines -> [(cls, cx, cy, w, h)] as floats."""
    return [tuple(float(v) for v in line.split()) for line in lines or []]


def removed_by_image(out: Path) -> dict[str, list[tuple[float, ...]]]:
    """{image: [(cls, cx, cy, w, h)]} of the boxes listed in out/hidden.json."""
    found = {}
    for r in json.loads((out / "hidden.json").read_text())["removed"]:
        found.setdefault(r["image"], []).append((float(r["cls"]), *r["box"]))
    return found


def out_labels(out: Path, rel: str) -> list[str] | None:
    """Label lines of image `rel` in split output `out` (None without a label file)."""
    lb = out / rel.replace("images/", "labels/", 1).rsplit(".", 1)[0]
    lb = lb.with_name(lb.name + ".txt")
    return lb.read_text().splitlines() if lb.exists() else None


def tree_state(root: Path) -> dict[str, tuple]:
    """{relative path: (size, mtime_ns, label bytes)} of every file under root."""
    files = (p for p in sorted(root.rglob("*")) if p.is_file())
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.suffix != ".jpg" and p.read_bytes())
            for p in files}


@pytest.fixture(scope="module")
def make_split(tmp_path_factory):
    """make(dataset, mode, ratio=None, seed=0) -> output folder of that split of a shared dataset, made once."""
    if not SHARED.is_dir():
        pytest.skip("../shared/datasets not present")
    made = {}

    def make(name: str, mode: str, ratio=None, seed: int = 0) -> Path:
        key = (name, mode, ratio, seed)
        if key not in made:
            out = tmp_path_factory.mktemp("split") / f"{name}-{mode}-{ratio}-{seed}"
            assert split_dataset(SHARED / name / "data.yaml", mode, ratio, seed, out) == out / "data.yaml"
            made[key] = out
        return made[key]

    return make


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("mode, ratio", list(LOCAL_RULES))
def test_image_rules_exact_counts(make_split, name, mode, ratio):
    src = source_labels(SHARED / name)
    out = make_split(name, mode, ratio)
    hidden = removed_by_image(out)
    rule = LOCAL_RULES[(mode, ratio)]
    for rel, lines in src.items():
        n = len(lines or [])
        kept = out_labels(out, rel)
        assert (kept is None) == (lines is None), rel  # a missing label file stays missing
        assert len(kept or []) == rule(n), rel
        assert len(hidden.get(rel, [])) == n - rule(n), rel
    summary = json.loads((out / "hidden.json").read_text())["summary"]
    n_boxes = sum(len(v or []) for v in src.values())
    assert summary["images"] == len(src) and summary["boxes_before"] == n_boxes
    assert summary["removed"] == sum(len(v or []) - rule(len(v or [])) for v in src.values())


@pytest.mark.parametrize("name", DATASETS)
def test_miss50_exact_counts(make_split, name):
    src = source_labels(SHARED / name)
    names = yaml.safe_load((SHARED / name / "data.yaml").read_text())["names"]
    total, free = Counter(), Counter()  # boxes per class; those in multi-box images (single ones are exempt)
    for lines in src.values():
        for b in boxes(lines):
            total[int(b[0])] += 1
            free[int(b[0])] += len(lines) > 1
    want = {c: min(total[c] // 2, free[c]) for c in total}
    out = make_split(name, "miss50")
    removed = Counter(int(b[0]) for v in removed_by_image(out).values() for b in v)
    assert removed == +Counter(want)
    per_class = json.loads((out / "hidden.json").read_text())["summary"]["per_class"]
    assert {names[c]: (total[c], want[c]) for c in total} == {
        k: (v["before"], v["removed"]) for k, v in per_class.items() if v["before"]}
    for rel, lines in src.items():
        if lines is not None and len(lines) == 1:
            assert out_labels(out, rel) == lines  # single-box images are never emptied


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("mode, ratio", [("easy", None), ("hard", None), ("extreme", None), ("miss50", None),
                                         ("keep", 0.3), ("keep", 0.7)])
def test_partial_plus_manifest_is_the_source(make_split, name, mode, ratio):
    out = make_split(name, mode, ratio)
    hidden = removed_by_image(out)
    assert set(hidden) <= set(src := source_labels(SHARED / name))
    for rel, lines in src.items():
        kept = out_labels(out, rel) or []
        assert Counter(boxes(kept) + hidden.get(rel, [])) == Counter(boxes(lines)), rel
        remaining = iter(lines or [])
        assert all(line in remaining for line in kept), rel  # kept lines verbatim, in the source's order
        assert os.path.samefile(out / rel, SHARED / name / rel) and (out / rel).is_symlink()  # linked, not copied


def test_keep_ratio_is_nested_and_near_ratio(make_split):
    src = source_labels(AQUARIUM)
    multi = sum(len(v) for v in src.values() if v and len(v) > 1)
    low, high = (removed_by_image(make_split("aquarium", "keep", r)) for r in (0.3, 0.7))
    for rel in src:
        assert Counter(high.get(rel, [])) <= Counter(low.get(rel, []))  # what 0.7 removes, 0.3 removes too
    for r, hidden in ((0.3, low), (0.7, high)):
        n_removed = sum(map(len, hidden.values()))
        assert abs(n_removed / multi - (1 - r)) < 0.05, (r, n_removed, multi)  # binomial sd ~0.009


def test_deterministic_and_source_untouched(make_split, tmp_path):
    before = tree_state(AQUARIUM)
    first = make_split("aquarium", "hard")
    again = split_dataset(AQUARIUM / "data.yaml", "hard", seed=0, out=tmp_path / "again")
    split_dataset(AQUARIUM / "data.yaml", "hard", seed=0, out=tmp_path / "again")  # replaces its own earlier output
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file() and p.suffix != ".jpg")
    assert files == sorted(p.relative_to(again.parent) for p in again.parent.rglob("*")
                           if p.is_file() and p.suffix != ".jpg")
    for rel in files:
        a, b = (first / rel).read_text(), (again.parent / rel).read_text()
        assert a.replace(str(first), "OUT") == b.replace(str(again.parent), "OUT"), rel
    assert not list(tmp_path.glob(".again*"))  # no temporary or moved-aside folders left
    assert json.loads((first / MARKER).read_text())["mode"] == "hard"  # what lets a re-run replace the folder
    other = removed_by_image(split_dataset(AQUARIUM / "data.yaml", "hard", seed=1, out=tmp_path / "s1").parent)
    assert other != removed_by_image(first)
    assert sum(map(len, other.values())) == sum(map(len, removed_by_image(first).values()))
    assert tree_state(AQUARIUM) == before


def test_choice_does_not_depend_on_other_files(make_split, aquarium_copy):
    """A subset of the images (same relative paths) gets the same removals as in the full dataset's split."""
    full = removed_by_image(make_split("aquarium", "hard"))
    part = removed_by_image(split_dataset(aquarium_copy, "hard", out=aquarium_copy.parent.parent / "sub").parent)
    assert part and part == {k: full[k] for k in source_labels(aquarium_copy.parent) if k in full}


def test_ultralytics_loads_the_partial_labels(make_split):
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    out = make_split("coco128", "extreme")
    data = check_det_dataset(str(out / "data.yaml"))
    assert Path(data["val"]).resolve() == (SHARED / "coco128" / "images" / "val").resolve()  # ../shared may be a link
    assert data["hidden"] == "hidden.json"
    ds = YOLODataset(img_path=data["train"], data=data, imgsz=64, augment=False, task="detect")
    assert all(Path(f).is_relative_to(out / "labels" / "train") for f in ds.label_files)
    summary = json.loads((out / "hidden.json").read_text())["summary"]
    assert len(ds.labels) == summary["images"] == 83
    n_labelled = sum(bool(v) for v in source_labels(SHARED / "coco128").values())
    assert sum(len(lb["cls"]) for lb in ds.labels) == summary["boxes_after"] == n_labelled  # one box each
    # the hidden-object recall reader finds the manifest from the YAML and keys its boxes by the dataset's images
    from yolo_partial.hidden import find_manifest, load_manifest

    manifest = load_manifest(find_manifest(out / "data.yaml"))
    assert set(manifest.boxes) <= set(ds.im_files) and sum(map(len, manifest.boxes.values())) == summary["removed"]


def test_list_file_source(aquarium_copy, tmp_path):
    root = aquarium_copy.parent
    images = sorted((root / "images" / "train").iterdir())
    (root / "lists").mkdir()
    (root / "lists" / "train.txt").write_text("".join(f"./../images/train/{p.name}\n" for p in images))
    aquarium_copy.write_text(aquarium_copy.read_text().replace("train: images/train", "train: lists/train.txt"))
    out = tmp_path / "out"
    split_dataset(aquarium_copy, "extreme", out=out)
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    listed = (out / "lists" / "train.txt").read_text().splitlines()
    assert listed == [f"./../images/train/{p.name}" for p in images]
    files = [str(Path(check_det_dataset(str(out / "data.yaml"))["train"]).parent / x[2:]) for x in listed]
    assert [len(Path(f).read_text().splitlines()) for f in img2label_paths(files)] == [1] * len(images)
    assert all(f.startswith(str(out)) for f in img2label_paths(files))


def test_folder_list_with_a_source_outside_the_root(tmp_path):
    """train: [own folder, folder of another dataset]: the other one is mirrored under _external/<absolute path>."""
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    for ds, line in (("a", "0 0.5 0.5 0.1 0.1"), ("b", "1 0.5 0.5 0.1 0.1")):
        for folder in ("images/train", "labels/train", "images/val"):
            (tmp_path / ds / folder).mkdir(parents=True)
        for i in range(3):
            (tmp_path / ds / "images/train" / f"{i}.jpg").touch()
            (tmp_path / ds / "labels/train" / f"{i}.txt").write_text(f"{line}\n" * (i + 1))
    other = tmp_path.resolve() / "b/images/train"
    (tmp_path / "a/data.yaml").write_text(f"train: [images/train, {other}]\nval: images/val\nnames: [x, y]\n")
    out = split_dataset(tmp_path / "a/data.yaml", "extreme", out=tmp_path / "out").parent
    external = f"_external/{other.as_posix().lstrip('/')}"
    assert yaml.safe_load((out / "data.yaml").read_text())["train"] == ["images/train", external]
    trains = check_det_dataset(str(out / "data.yaml"))["train"]
    images = [str(p) for t in trains for p in sorted(Path(t).iterdir())]
    assert [Path(f).read_text() for f in img2label_paths(images)] == (["0 0.5 0.5 0.1 0.1\n"] * 3
                                                                      + ["1 0.5 0.5 0.1 0.1\n"] * 3)
    assert sum(map(len, removed_by_image(out).values())) == 2 * (0 + 1 + 2)


@pytest.mark.parametrize(
    "line, reason",
    [("7 0.5 0.5 0.2 0.2", "class 7, outside [0, 7)"), ("0 0.5 0.5 0.2", "has 4 fields, not 5"),
     ("0 0.1 0.1 0.3 0.1 0.2 0.4", "7 fields, not 5; expected lines 'class cx cy w h'"),
     ("0 0.5 1.5 0.2 0.2", "coordinate 1.5 outside [0, 1]"), ("1 0.5 0.5 0.2 x", "non-numeric field"),
     ("nan 0.5 0.5 0.2 0.2", "NaN or infinite")],  # fmt: skip
)
def test_bad_label_line_is_one_line_error(aquarium_copy, tmp_path, capsys, line, reason):
    label = sorted((aquarium_copy.parent / "labels" / "train").iterdir())[2]
    n = len(label.read_text().splitlines()) + 1
    label.write_text(label.read_text() + line + "\n")
    out = tmp_path / "out"
    err = one_line_error(capsys, "split", f"data={aquarium_copy}", "mode=hard", f"out={out}")
    assert f"{label}: malformed labels:" in err and f"line {n}" in err and reason in err, err
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written


@pytest.mark.parametrize(
    "args, expect",
    [(["mode=hard", "seeds=1"], "unknown key 'seeds'; did you mean seed?"),
     (["mode=medium"], "mode=medium is invalid: expected one of easy|hard|extreme|miss50|keep"),
     ([], "mode=None is invalid"), (["mode=hard", "ratio=0.5"], "ratio=0.5 applies only to mode=keep"),
     (["mode=keep"], "mode=keep needs ratio=R"),
     (["mode=keep", "ratio=1.5"], "ratio=1.5 is invalid: expected a number in [0, 1]"),
     (["mode=easy", "seed=0.5"], "seed=0.5 is invalid: expected an integer")],  # fmt: skip
)
def test_bad_arguments(aquarium_copy, capsys, args, expect):
    assert expect in one_line_error(capsys, "split", f"data={aquarium_copy}", *args)


def test_bad_data_and_out(aquarium_copy, tmp_path, capsys):
    root = aquarium_copy.parent
    assert "split needs data=PATH" in one_line_error(capsys, "split", "mode=hard")
    assert f"data YAML not found: {tmp_path / 'x.yaml'}" in one_line_error(capsys, "split", f"data={tmp_path / 'x.yaml'}",
                                                                           "mode=hard")
    assert "is inside the source dataset" in one_line_error(capsys, "split", f"data={aquarium_copy}", "mode=easy",
                                                            f"out={root / 'split'}")
    foreign = tmp_path / "mine"
    (foreign / "keep.txt").parent.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert "was not written by yolo-partial" in one_line_error(capsys, "split", f"data={aquarium_copy}", "mode=easy",
                                                               f"out={foreign}")
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]
    missing = root / "images" / "train" / "absent.jpg"
    (root / "train.txt").write_text(f"./images/train/{sorted((root / 'images/train').iterdir())[0].name}\n{missing}\n")
    aquarium_copy.write_text(aquarium_copy.read_text().replace("train: images/train", "train: train.txt"))
    assert f"{root / 'train.txt'}: line 2: image {missing} not found" in one_line_error(
        capsys, "split", f"data={aquarium_copy}", "mode=easy", f"out={tmp_path / 'o'}")


def test_orphan_labels_warned_with_count(aquarium_copy, tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(split_mod.LOGGER, "warning", warnings.append)
    labels = aquarium_copy.parent / "labels" / "train"
    for stem in ("gone1", "gone2"):
        (labels / f"{stem}.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    split_dataset(aquarium_copy, "easy", out=tmp_path / "out")
    assert len(warnings) == 1 and "2 label files have no train image" in warnings[0] and "gone1.txt" in warnings[0]


def test_miss50_exemption_shortfall_warns(tmp_path, monkeypatch):
    """Class 0: 4 single-box images + 1 of a two-box image -> floor(5/2)=2 wanted, only 1 removable."""
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    labels = ["0 0.5 0.5 0.1 0.1"] * 4 + ["0 0.2 0.2 0.1 0.1\n1 0.7 0.7 0.2 0.2"]
    for i, text in enumerate(labels):
        (root / "images" / "train" / f"{i}.jpg").touch()  # split only links images, never reads them
        (root / "labels" / "train" / f"{i}.txt").write_text(text + "\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    warnings = []
    monkeypatch.setattr(split_mod.LOGGER, "warning", warnings.append)
    out = split_dataset(root / "data.yaml", "miss50", out=tmp_path / "out").parent
    assert removed_by_image(out) == {"images/train/4.jpg": [(0.0, 0.2, 0.2, 0.1, 0.1)]}
    assert len(warnings) == 1 and "a 1/2" in warnings[0]


def test_default_out_name(tmp_path):
    from ultralytics.utils import DATASETS_DIR

    assert default_out(Path("/d/coco128"), "keep", 0.5, 3) == DATASETS_DIR / "coco128-keep0.5-s3"
    assert default_out(Path("/d/aquarium"), "miss50", None, 0) == DATASETS_DIR / "aquarium-miss50-s0"


def test_keep_single_false_draws_single_boxes_too(tmp_path):
    """keep_single=False: miss50 removes exactly floor(N_c/2) of every class over all boxes, single ones included;
    keep may empty single-box images. The default split is unchanged (the exemption stays)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/datasets not present")
    src = source_labels(AQUARIUM)
    total = Counter(int(b[0]) for lines in src.values() for b in boxes(lines))
    out = tmp_path / "m"
    split_dataset(AQUARIUM / "data.yaml", "miss50", None, 0, out, keep_single=False)
    removed = Counter(int(b[0]) for v in removed_by_image(out).values() for b in v)
    assert removed == +Counter({c: n // 2 for c, n in total.items()})
    singles = [rel for rel, lines in src.items() if lines is not None and len(lines) == 1]
    out_k = tmp_path / "k"
    split_dataset(AQUARIUM / "data.yaml", "keep", 0.3, 0, out_k, keep_single=False)
    assert any(not out_labels(out_k, rel) for rel in singles)  # some single boxes drawn away at ratio 0.3
    assert json.loads((out_k / "hidden.json").read_text())["keep_single"] is False


def test_keep_single_only_for_miss50_and_keep(tmp_path, capsys):
    line = one_line_error(capsys, "split", f"data={AQUARIUM / 'data.yaml'}", "mode=hard", "keep_single=False",
                          f"out={tmp_path / 'x'}")
    assert "keep_single=False applies to mode=miss50|keep only" in line


def test_split_accepts_a_shipped_name_outside_the_clone(tmp_path, monkeypatch):
    """data=shapes-full names the shipped YAML whose `generator:` makes the embedded data, as train= resolves it."""
    from yolo_partial.cli import main

    monkeypatch.setenv("YOLO_PARTIAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # no data/ folder here
    main(["split", "data=shapes-full", "mode=hard", f"out={tmp_path / 'hard'}"])
    manifest = json.loads((tmp_path / "hard" / "hidden.json").read_text())
    assert manifest["mode"] == "hard" and manifest["removed"]
    assert yaml.safe_load((tmp_path / "hard" / "data.yaml").read_text())["nc"] == 6
