"""Tests of the embedded procedurally generated "shapes" dataset (yolo_partial.shapes)."""

import json
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_partial import shapes

N_TRAIN, N_VAL, IMGSZ = 40, 10, 160


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Root folder of a small dataset generated once for the read-only tests."""
    root = tmp_path_factory.mktemp("gen") / "shapes"
    shapes.generate(root, n_train=N_TRAIN, n_val=N_VAL, seed=0)
    return root


def _labels(root: Path, variant: str, split: str) -> dict[str, list[str]]:
    """{image stem: label lines} of one variant and split."""
    return {p.stem: p.read_text().splitlines() for p in sorted((root / variant / "labels" / split).glob("*.txt"))}


def _manifest(root: Path) -> dict:
    """Parsed hidden.json."""
    return json.loads((root / "hidden.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every regular file under root except the YAMLs and generator.json (they hold root)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and (p.suffix in (".jpg", ".txt") or p.name == "hidden.json")}


def test_layout_and_yaml(root):
    partial = root / "partial.yaml"
    assert partial.read_text().startswith(f'path: "{root / "partial"}"')
    assert f'path: "{root / "full"}"' in (root / "full.yaml").read_text()
    assert 'hidden: "../hidden.json"\n' in partial.read_text() and "hidden:" not in (root / "full.yaml").read_text()
    for variant in shapes.VARIANTS:
        for split, n in (("train", N_TRAIN), ("val", N_VAL)):
            assert len(list((root / variant / "images" / split).glob("*.jpg"))) == n
            assert len(list((root / variant / "labels" / split).glob("*.txt"))) == n
    assert not list(root.parent.glob("*.tmp-*"))


def test_yaml_loads_in_ultralytics_form(root):
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((root / "full.yaml").read_text())
    assert data["names"] == dict(enumerate(shapes.CLASS_NAMES))
    assert data["nc"] == len(shapes.CLASS_NAMES)
    assert (Path(data["path"]) / data["train"]).is_dir() and (Path(data["path"]) / data["val"]).is_dir()
    # Ultralytics resolves the image folder: full's images must not resolve into partial's folder.
    assert (Path(data["path"]) / data["train"]).resolve() == (root / "full/images/train").resolve()


def test_determinism(tmp_path, root):
    again = tmp_path / "again"
    shapes.generate(again, n_train=N_TRAIN, n_val=N_VAL, seed=0)
    assert _files(again) == _files(root)
    other = tmp_path / "other"
    shapes.generate(other, n_train=N_TRAIN, n_val=N_VAL, seed=1)
    assert _files(other) != _files(root)


def test_label_format(root):
    for variant in shapes.VARIANTS:
        for split in ("train", "val"):
            for lines in _labels(root, variant, split).values():
                for line in lines:
                    fields = line.split()
                    assert len(fields) == 5
                    assert 0 <= int(fields[0]) < len(shapes.CLASS_NAMES)
                    cx, cy, w, h = map(float, fields[1:])
                    assert all(f"{v:.6f}" == s for v, s in zip((cx, cy, w, h), fields[1:]))
                    assert w > 0 and h > 0
                    assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
                    assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6


def test_partial_plus_hidden_is_full(root):
    full, partial = _labels(root, "full", "train"), _labels(root, "partial", "train")
    rebuilt = {stem: Counter(lines) for stem, lines in partial.items()}
    for entry in _manifest(root)["removed"]:
        stem = Path(entry["image"]).stem
        assert entry["image"] == f"images/train/{stem}.jpg"
        rebuilt[stem][" ".join([str(entry["cls"])] + [f"{v:.6f}" for v in entry["box"]])] += 1
    assert rebuilt == {stem: Counter(lines) for stem, lines in full.items()}


def test_about_half_hidden_and_none_emptied(root):
    full, partial = _labels(root, "full", "train"), _labels(root, "partial", "train")
    n_full = sum(map(len, full.values()))
    assert 0.35 <= 1 - sum(map(len, partial.values())) / n_full <= 0.65
    assert all(partial[stem] for stem, lines in full.items() if lines)


def test_val_fully_labelled(root):
    assert _labels(root, "partial", "val") == _labels(root, "full", "val")
    assert not [e for e in _manifest(root)["removed"] if "/val/" in e["image"]]


def test_manifest_summary(root):
    manifest = _manifest(root)
    assert list(manifest) == ["format", "source", "mode", "seed", "root", "summary", "removed"]
    assert (manifest["format"], manifest["source"], manifest["mode"], manifest["seed"], manifest["root"]) == (
        "yolo-partial-manifest/1", f"shapes-v{shapes.SHAPES_VERSION}", "shapes", 0, "partial")
    summary = manifest["summary"]
    full = [line for lines in _labels(root, "full", "train").values() for line in lines]
    partial = [line for lines in _labels(root, "partial", "train").values() for line in lines]
    assert summary["images"] == N_TRAIN
    assert (summary["boxes_before"], summary["boxes_after"]) == (len(full), len(partial))
    assert summary["removed"] == len(manifest["removed"]) == len(full) - len(partial)
    before, after = Counter(int(x.split()[0]) for x in full), Counter(int(x.split()[0]) for x in partial)
    assert list(summary["per_class"]) == shapes.CLASS_NAMES
    for c, name in enumerate(shapes.CLASS_NAMES):
        assert summary["per_class"][name] == {"before": before[c], "after": after[c],
                                              "removed": before[c] - after[c]}


def test_size_range(root):
    widths = [float(line.split()[3]) * IMGSZ for split in ("train", "val")
              for lines in _labels(root, "full", split).values() for line in lines]
    assert min(widths) < 12 and max(widths) > 50


def test_neither_colour_nor_shape_identifies_class():
    colours = Counter(colour for colour, _ in shapes.CLASS_SPECS)
    forms = Counter(shape for _, shape in shapes.CLASS_SPECS)
    assert sum(n >= 2 for n in colours.values()) >= 2 and sum(n >= 2 for n in forms.values()) >= 2
    assert shapes.CLASS_NAMES == [f"{c} {s}" for c, s in shapes.CLASS_SPECS]


def test_objects_drawn_in_their_class_colour(root):
    """Large circles are not rotated, so their box centre lies on the object unless something occludes it."""
    matches = []
    for stem, lines in _labels(root, "full", "val").items():
        img = cv2.imread(str(root / "full/images/val" / f"{stem}.jpg")).astype(int)
        for line in lines:
            cls, cx, cy, w, _ = line.split()
            colour, shape = shapes.CLASS_SPECS[int(cls)]
            if shape == "circle" and float(w) * IMGSZ > 20:
                x, y = int(float(cx) * IMGSZ), int(float(cy) * IMGSZ)
                pixel = np.median(img[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3), axis=0)
                matches.append(int(np.argmax(pixel)) == {"blue": 0, "green": 1, "red": 2}[colour])
    assert matches and np.mean(matches) >= 0.8


def test_existing_root_is_reused(root):
    label = root / "partial/labels/train/000000.txt"
    mtime = label.stat().st_mtime_ns
    assert shapes.generate(root, n_train=N_TRAIN, n_val=N_VAL, seed=0) == root / "partial.yaml"
    assert label.stat().st_mtime_ns == mtime
    assert not list(root.parent.glob("*.tmp-*"))


def test_existing_root_with_other_arguments_is_refused(root):
    with pytest.raises(ValueError, match="generated with"):
        shapes.generate(root, n_train=N_TRAIN, n_val=N_VAL, seed=5)


def test_race_loser_discards_its_copy(tmp_path, monkeypatch):
    root = tmp_path / "shapes"
    real_build = shapes._build

    def build_then_lose_race(tmp, final, params):
        real_build(tmp, final, params)
        real_build(tmp.parent / "winner", final, params)
        os.replace(tmp.parent / "winner", final)

    monkeypatch.setattr(shapes, "_build", build_then_lose_race)
    assert shapes.generate(root, n_train=4, n_val=2) == root / "partial.yaml"
    assert (root / "hidden.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_ensure_shapes_uses_env_cache(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(shapes, "generate", lambda root: calls.append(root) or root / "partial.yaml")
    monkeypatch.setenv("YOLO_PARTIAL_CACHE", str(tmp_path))
    expected = tmp_path / f"shapes-v{shapes.SHAPES_VERSION}"
    assert shapes.ensure_shapes("full") == expected / "full.yaml"
    assert shapes.ensure_shapes() == expected / "partial.yaml"
    assert shapes.ensure_shapes("full", cache_dir=tmp_path / "c") == tmp_path / "c" / expected.name / "full.yaml"
    assert calls == [expected, expected, tmp_path / "c" / expected.name]


def test_ensure_shapes_generates_default(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_PARTIAL_CACHE", str(tmp_path))
    path = shapes.ensure_shapes("full")
    assert path == tmp_path / f"shapes-v{shapes.SHAPES_VERSION}" / "full.yaml" and path.is_file()


def test_unknown_variant():
    with pytest.raises(ValueError, match=r"'half'.*partial, full"):
        shapes.ensure_shapes("half")
