"""Tests of `mine` (candidate missing boxes, calibration, CVAT/COCO export) and `accept` (folding a review back).

One tiny from-scratch model is trained once on the embedded dataset; mining runs on a list of its first training
images. The checks recompute what `mine` reports independently: predictions straight from Ultralytics, labels and the
manifest read as plain text and JSON, IoU and matching written out here.
"""

import hashlib
import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest

from yolo_partial.accept import run_accept
from yolo_partial.cvat import read_cvat_images
from yolo_partial.errors import PartialConfigError, PartialDataError
from yolo_partial.mine import run_mine
from yolo_partial.shapes import ensure_shapes

N_MINE = 64  # training images mined
IMGSZ, BATCH = 64, 16
LOW_CONF = 0.0015  # a cut low enough that the weak test model exports candidates that hit hidden boxes


# ----------------------------------------------------------------------------------------------------- fixtures
def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root (links followed)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model path, mining data YAML, shapes partial root, manifest path, tmp folder), the model trained once."""
    from ultralytics import YOLO

    partial = ensure_shapes("partial")
    root = partial.parent / "partial"
    tmp = tmp_path_factory.mktemp("mine")
    train_imgs = sorted((root / "images" / "train").glob("*.jpg"))
    val_imgs = sorted((root / "images" / "val").glob("*.jpg"))[:8]
    (tmp / "mine.txt").write_text("".join(f"{p}\n" for p in train_imgs[:N_MINE]))
    (tmp / "val.txt").write_text("".join(f"{p}\n" for p in val_imgs))
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(["red circle", "red triangle", "green triangle",
                                                            "green square", "blue square", "blue circle"]))
    # the embedded dataset's own layout and manifest; train is a list of its first images
    data = tmp / "data.yaml"
    data.write_text(f"path: {root}\ntrain: {tmp / 'mine.txt'}\nval: {tmp / 'val.txt'}\nhidden: ../hidden.json\n"
                    f"names:\n{names}")
    (tmp / "train.yaml").write_text(f"path: {root}\ntrain: images/train\nval: {tmp / 'val.txt'}\nnames:\n{names}")
    # one short epoch; nbs=batch makes every batch an optimizer step, so the model already ranks objects a little
    YOLO("yolov8n.yaml").train(data=str(tmp / "train.yaml"), epochs=1, imgsz=IMGSZ, batch=8, nbs=8, lr0=0.02,
                               optimizer="SGD", warmup_epochs=0, workers=0, plots=False, val=False, amp=False,
                               verbose=False, seed=0, deterministic=True, project=str(tmp / "runs"), name="t")
    return tmp / "runs" / "t" / "weights" / "last.pt", data, root, partial.parent / "hidden.json", tmp


@pytest.fixture(scope="module")
def source_digest(setup):
    """Digest of the source dataset after training (which may leave label caches) and before mine or accept."""
    return tree_digest(setup[2])


@pytest.fixture(scope="module")
def mined(setup, source_digest):
    """A mine run cut at LOW_CONF, with a small precision target so that a calibrated threshold exists too."""
    model, data, *_, tmp = setup
    out = run_mine({"model": str(model), "data": str(data), "out": str(tmp / "mined"), "conf": LOW_CONF,
                    "precision": 0.02, "imgsz": IMGSZ, "batch": BATCH})
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (n, 4) and (m, 4) xyxy boxes -> (n, m), written out independently of the package."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def _pixels(rows: np.ndarray, w: int, h: int) -> np.ndarray:
    """(n, 5) [cls, cx, cy, w, h] normalised -> (n, 5) [cls, x1, y1, x2, y2] pixels."""
    r = rows.reshape(-1, 5)
    return np.stack([r[:, 0], (r[:, 1] - r[:, 3] / 2) * w, (r[:, 2] - r[:, 4] / 2) * h,
                     (r[:, 1] + r[:, 3] / 2) * w, (r[:, 2] + r[:, 4] / 2) * h], 1)


@pytest.fixture(scope="module")
def truth(setup, mined):
    """The independent computation: per image its candidates (pixels, rounded to 0.01 px as exported), whether each
    is a true hidden box (greedy in score order, same class, IoU >= 0.5), and the hidden boxes it takes."""
    from ultralytics import YOLO

    model, data, root, manifest_path, tmp = setup
    manifest = json.loads(manifest_path.read_text())
    hidden = {}
    for e in manifest["removed"]:
        hidden.setdefault(str(manifest_path.parent / manifest["root"] / e["image"]), []).append(e)
    files = (tmp / "mine.txt").read_text().split()
    out = {}
    results = YOLO(str(model)).predict(str(tmp / "mine.txt"), stream=True, conf=0.001, imgsz=IMGSZ, batch=BATCH,
                                       verbose=False)
    for f, r in zip(files, results, strict=True):
        h, w = r.orig_shape
        pred = np.hstack([r.boxes.cls.numpy()[:, None], np.round(r.boxes.xyxy.numpy().astype(float), 2),
                          r.boxes.conf.numpy()[:, None].astype(float)])
        pred = pred[np.argsort(-pred[:, 5], kind="stable")]
        lb = Path(f.replace("/images/", "/labels/")).with_suffix(".txt")
        labels = _pixels(np.array([[float(v) for v in line.split()] for line in lb.read_text().splitlines()]), w, h)
        hit_label = ((_iou(pred[:, 1:5], labels[:, 1:5]) >= 0.5) & (pred[:, :1] == labels[:, 0])).any(1)
        cands = pred[~hit_label]
        entries = hidden.get(f, [])
        hb = _pixels(np.array([[e["cls"], *e["box"]] for e in entries], float), w, h)
        took = [-1] * len(cands)
        free = [True] * len(hb)
        for i, c in enumerate(cands):  # score order: each candidate takes the best free same-class hidden box
            best, best_j = 0.5, -1
            for j, b in enumerate(hb):
                o = _iou(c[None, 1:5], b[None, 1:5])[0, 0] if free[j] and b[0] == c[0] else 0.0
                if o >= best and (best_j < 0 or o > best):  # the first of equal IoUs, as argmax
                    best, best_j = o, j
            if best_j >= 0:
                took[i], free[best_j] = best_j, False
        out[Path(f).name] = {"file": f, "size": (w, h), "cands": cands, "took": np.array(took, int),
                             "hidden": entries, "labels": lb.read_text().splitlines()}
    return out


def _curve(truth: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(scores descending, cumulative candidates, cumulative hits, hidden total) pooled over images."""
    s = np.concatenate([t["cands"][:, 5] for t in truth.values()])
    hit = np.concatenate([t["took"] >= 0 for t in truth.values()])
    order = np.argsort(-s, kind="stable")
    return s[order], np.arange(1, len(s) + 1), np.cumsum(hit[order]), sum(len(t["hidden"]) for t in truth.values())


# ------------------------------------------------------------------------------------------------ mine: figures
def test_pr_figures_match_independent_computation(mined, truth):
    s, n, real, n_hidden = _curve(truth)
    last = np.r_[s[1:] != s[:-1], True]
    rows = [line.split(",") for line in (mined / "pr.csv").read_text().splitlines()[1:]]
    got = np.array(rows, float)
    assert len(got) == last.sum() > 0
    np.testing.assert_allclose(got[:, 0], s[last], rtol=1e-6)
    np.testing.assert_array_equal(got[:, 1], n[last])
    np.testing.assert_array_equal(got[:, 2], real[last])
    np.testing.assert_allclose(got[:, 3], real[last] / n[last])
    np.testing.assert_allclose(got[:, 4], real[last] / n_hidden)
    assert real[-1] > 0, "the test model should find some hidden boxes at the score floor"

    record = json.loads((mined / "mine.json").read_text())
    cal = record["calibration"]
    at = s >= LOW_CONF
    assert cal["hidden"] == n_hidden and cal["candidates"] == at.sum() and cal["real"] == real[at][-1]
    assert cal["precision"] == pytest.approx(real[at][-1] / at.sum())
    assert cal["recall"] == pytest.approx(real[at][-1] / n_hidden)
    # the calibrated threshold: the lowest distinct score whose precision reaches the target
    reached = (real[last] / n[last]) >= 0.02
    assert cal["threshold"] == (pytest.approx(s[last][reached][-1]) if reached.any() else None)
    p, r = real[at][-1] / at.sum(), real[at][-1] / n_hidden
    assert record["line"] == (f"at score ≥ {LOW_CONF:.3g}: {at.sum()} candidates, about {p * 100:.0f} % real, "
                              f"finding {r * 100:.0f} % of the unlabelled objects")
    print(f"\ntest model: {record['line']}; precision 0.02 reached at score >= {cal['threshold']}; "
          f"{real[-1]} of {n_hidden} hidden boxes among all {len(s)} candidates; best precision "
          f"{(real[last] / n[last]).max():.3f}")


def test_calibrated_cut_is_the_lowest_score_reaching_the_precision(setup, truth):
    """Without conf=, the list is cut where precision first reaches `precision` (low here: the test model is weak)."""
    model, data, *_, tmp = setup
    s, n, real, n_hidden = _curve(truth)
    last = np.r_[s[1:] != s[:-1], True]
    reached = (real[last] / n[last])[real[last] > 0]  # the weak model's first candidates may all be wrong: 0 there
    assert len(reached), "the test model should find some hidden boxes at the score floor"
    target = float(np.median(reached))  # reached somewhere, by construction, and > 0 as `precision` must be
    out = run_mine({"model": str(model), "data": str(data), "out": str(tmp / "calibrated"), "precision": target,
                    "imgsz": IMGSZ, "batch": BATCH})
    record = json.loads((out / "mine.json").read_text())
    cut = s[last][(real[last] / n[last]) >= target][-1]
    assert record["conf_from"] == "calibrated" and record["conf"] == pytest.approx(cut)
    assert record["candidates"] == (s >= cut).sum() == record["calibration"]["candidates"]
    assert record["calibration"]["precision"] >= target


def test_cvat_xml_gives_back_the_exported_boxes(mined, truth, setup):
    ann = read_cvat_images(mined / "candidates.xml")
    names = [lb.name for lb in ann.labels]
    assert names == ["red circle", "red triangle", "green triangle", "green square", "blue square", "blue circle"]
    for lb in ann.labels:  # source and score declared on every label, or CVAT drops them on import
        assert {a.name for a in lb.attributes} == {"source", "score"}
        assert next(a for a in lb.attributes if a.name == "source").values == ("label", "candidate")
    raw = json.loads((mined / "cvat_labels.json").read_text())  # for CVAT's Raw label editor
    assert [lb["name"] for lb in raw] == names and all(len(lb["attributes"]) == 2 for lb in raw)
    record = json.loads((mined / "mine.json").read_text())
    assert len(ann.images) == record["candidate_images"] > 0
    assert sum(len(im.boxes) for im in ann.images) == record["candidates"] + sum(
        len(truth[im.name]["labels"]) for im in ann.images)
    for im in ann.images:
        t = truth[im.name]
        assert (im.width, im.height) == t["size"]
        exp = t["cands"][t["cands"][:, 5] >= LOW_CONF]
        got = [b for b in im.boxes if b.attributes["source"] == "candidate"]
        assert [(names.index(b.label), *b.xyxy) for b in got] == [tuple(c[:5]) for c in exp.tolist()]  # exact
        assert [float(b.attributes["score"]) for b in got] == pytest.approx(exp[:, 5].tolist(), abs=6e-6)
        labels = [b for b in im.boxes if b.attributes["source"] == "label"]
        want = _pixels(np.array([[float(v) for v in x.split()] for x in t["labels"]]), *t["size"])
        assert [names.index(b.label) for b in labels] == want[:, 0].tolist()
        np.testing.assert_allclose([b.xyxy for b in labels], want[:, 1:5], atol=0.005 + 1e-9)  # CVAT's 0.01 px
        # the YOLO candidate files hold the same boxes
        txt = np.array([[float(v) for v in x.split()] for x in
                        (mined / "candidates" / im.name).with_suffix(".txt").read_text().splitlines()])
        np.testing.assert_allclose(_pixels(txt[:, :5], *t["size"]), exp[:, :5], atol=1e-4 * max(t["size"]))
    ranking = (mined / "ranking.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in ranking[1:len(ann.images) + 1]] == [im.name for im in ann.images]
    expected = [float(r.split(",")[2]) for r in ranking[1:]]
    assert expected == sorted(expected, reverse=True) and len(expected) == N_MINE


def test_coco_json_loads_in_pycocotools(mined):
    from pycocotools.coco import COCO

    coco = COCO(str(mined / "candidates.json"))
    xml = read_cvat_images(mined / "candidates.xml")
    assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == [im.name for im in xml.images]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [lb.name for lb in xml.labels]
    cands = [a for a in coco.anns.values() if a["candidate"]]
    assert len(cands) == json.loads((mined / "mine.json").read_text())["candidates"]
    assert all(0 < a["score"] <= 1 for a in cands) and all("score" not in a for a in coco.anns.values()
                                                           if not a["candidate"])
    for im_id, im in zip(sorted(coco.imgs), xml.images):
        boxes = [(a["category_id"] - 1, a["bbox"]) for a in coco.loadAnns(coco.getAnnIds(imgIds=[im_id]))]
        assert len(boxes) == len(im.boxes)
        for (c, (x, y, w, h)), b in zip(boxes, im.boxes):
            assert xml.labels[c].name == b.label
            assert (x, y, x + w, y + h) == pytest.approx(b.xyxy, abs=1e-9)


def test_review_outputs(mined):
    page = (mined / "review.html").read_text()
    n = min(50, json.loads((mined / "mine.json").read_text())["candidate_images"])
    assert page.count("<figure>") == page.count("data:image/jpeg;base64,") == n
    assert "http://" not in page and "https://" not in page  # viewable offline
    import cv2

    assert cv2.imread(str(mined / "review.png")) is not None and cv2.imread(str(mined / "pr.png")) is not None
    suspects = (mined / "suspect_labels.csv").read_text().splitlines()
    assert suspects[0].startswith("image,cls,name")
    scores = [float(r.split(",")[7]) for r in suspects[1:]]
    assert all(s < LOW_CONF for s in scores) and scores == sorted(scores)


def test_uncalibrated_without_manifest_and_image_zip(setup, mined, truth):
    model, data, _, _, tmp = setup
    plain = tmp / "plain.yaml"
    plain.write_text("\n".join(x for x in data.read_text().splitlines() if not x.startswith("hidden:")) + "\n")
    out = run_mine({"model": str(model), "data": str(plain), "out": str(tmp / "plain"), "imgsz": IMGSZ,
                    "batch": BATCH, "images": True, "conf": LOW_CONF})
    record = json.loads((out / "mine.json").read_text())
    assert record["line"].startswith("uncalibrated:") and "split" in record["line"] and "ratio=0.9" in record["line"]
    assert record["calibration"] is None and record["conf_from"] == "given"
    assert not (out / "pr.csv").exists() and not (out / "pr.png").exists()
    names = [im.name for im in read_cvat_images(out / "candidates.xml").images]
    with zipfile.ZipFile(out / "images.zip") as z:
        assert z.namelist() == names
        assert z.read(names[0]) == Path(truth[names[0]]["file"]).read_bytes()
    # without conf= and without a manifest, the cut is Ultralytics' default 0.25
    again = run_mine({"model": str(model), "data": str(plain), "out": str(tmp / "plain"), "imgsz": IMGSZ})
    assert json.loads((again / "mine.json").read_text())["conf"] == 0.25


def test_partial_file_keeps_asserted_classes_out_of_the_candidates(setup, truth):
    """With a `partial:` file, an image's classes named as labelled or negative are never candidates (their unmatched
    predictions are false alarms); its other classes, and images without `labeled_classes`, are mined as before."""
    from yolo_partial.partial_labels import ImagePartial, write_partial

    model, data, _, _, tmp = setup
    files = sorted(truth, key=lambda n: truth[n]["file"])
    listed = {files[0]: ImagePartial({0, 1}, {2}), files[1]: ImagePartial(None, {5}), files[2]: ImagePartial({4})}
    names = data.read_text().split("names:\n", 1)[1]
    write_partial(tmp / "partial.json", {truth[n]["file"]: e for n, e in listed.items()},
                  [line.split(": ", 1)[1] for line in names.splitlines()])
    with_partial = tmp / "with_partial.yaml"
    with_partial.write_text(data.read_text() + f"partial: {tmp / 'partial.json'}\n")
    out = run_mine({"model": str(model), "data": str(with_partial), "out": str(tmp / "partial_mined"),
                    "conf": LOW_CONF, "imgsz": IMGSZ, "batch": BATCH})
    skip = {files[0]: {0, 1, 2}, files[1]: {5}, files[2]: {4}}  # explicit classes; others mined as before
    checked = 0
    for name, t in truth.items():
        cands = t["cands"][t["cands"][:, 5] >= LOW_CONF]
        want = sorted(int(c) for c in cands[:, 0] if int(c) not in skip.get(name, set()))
        txt = (out / "candidates" / name).with_suffix(".txt")
        got = sorted(int(line.split()[0]) for line in txt.read_text().splitlines()) if txt.is_file() else []
        assert got == want, name
        checked += name in skip and len(want) < len(cands)
    assert checked, "the test model should predict some of the asserted classes on the listed images"


# ----------------------------------------------------------------------------------------------------- accept
def _review_keeping(xml_in: Path, xml_out: Path, keep) -> None:
    """Write a 'reviewed' copy of a CVAT XML keeping the candidate boxes for which keep(image, box element) is true,
    with ElementTree directly (as CVAT would write it), labels untouched."""
    tree = ET.parse(xml_in)
    for im in tree.getroot().iter("image"):
        for box in list(im.findall("box")):
            source = next(a.text for a in box.findall("attribute") if a.get("name") == "source")
            if source == "candidate" and not keep(im.get("name"), box):
                im.remove(box)
    tree.write(xml_out, encoding="utf-8", xml_declaration=True)


def _label_lines(folder: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines() for p in sorted(folder.rglob("*.txt")) if "labels" in p.parts}


def test_accept_restores_the_hidden_boxes_a_review_keeps(setup, mined, truth, source_digest):
    _, data, root, manifest_path, tmp = setup
    names = [lb.name for lb in read_cvat_images(mined / "candidates.xml").labels]

    def is_real(image, box):
        t = truth[image]
        index = {tuple(c[:5]): i for i, c in enumerate(t["cands"].tolist())}
        i = index[(names.index(box.get("label")), *(float(box.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")))]
        return t["took"][i] >= 0

    reviewed = tmp / "review" / "annotations.xml"
    reviewed.parent.mkdir()
    _review_keeping(mined / "candidates.xml", reviewed, is_real)
    new_yaml = run_accept({"data": str(data), "reviewed": str(reviewed), "mined": str(mined), "out": str(tmp / "v2")})
    out = new_yaml.parent
    kept = {(n, i) for n, t in truth.items() for i in np.flatnonzero((t["took"] >= 0) & (t["cands"][:, 5] >= LOW_CONF))}
    assert kept, "the review must keep some candidates"
    acc = json.loads((out / "accepted.json").read_text())
    assert acc["format"] == "yolo-partial-manifest/1" and acc["summary"]["accepted"] == len(kept)
    assert all(a["hidden"] and a["origin"] == "candidate" for a in acc["added"]) and len(acc["added"]) == len(kept)
    n_exported = json.loads((mined / "mine.json").read_text())["candidates"]
    assert len(acc["rejected"]) == n_exported - len(kept) and acc["removed"] == []
    # hidden.json carried over: exactly the hidden boxes the kept candidates matched are gone
    took = [truth[n]["hidden"][truth[n]["took"][i]] for n, i in kept]
    restored = {(e["image"], tuple(e["box"])) for e in took}
    source = json.loads(manifest_path.read_text())["removed"]
    new = json.loads((out / "hidden.json").read_text())
    key = lambda e: (Path(e["image"]).name, tuple(e["box"]))  # noqa: E731 (images outside the list: absolute paths)
    assert [key(e) for e in new["removed"]] == [key(e) for e in source if (e["image"], tuple(e["box"])) not in restored]
    assert new["carried_over"]["restored"] == len(restored) == len(kept)
    # labels: the old lines verbatim, then the accepted boxes
    labels = _label_lines(out)
    assert len(labels) == N_MINE
    for name, t in truth.items():
        lines = labels[Path(name).with_suffix(".txt").name]
        assert lines[:len(t["labels"])] == t["labels"]
        extra = np.array([[float(v) for v in x.split()] for x in lines[len(t["labels"]):]]).reshape(-1, 5)
        mine_kept = [i for n, i in kept if n == name]
        np.testing.assert_allclose(_pixels(extra, *t["size"]), t["cands"][mine_kept, :5], atol=2e-6 * 160)
    # the new version trains like a split output: images are links, data.yaml names the manifest
    text = new_yaml.read_text()
    assert f'path: "{out}"' in text and 'hidden: "hidden.json"' in text and "val:" in text
    assert (out / "images" / "train" / "000000.jpg").resolve() == (root / "images" / "train" / "000000.jpg").resolve()
    assert tree_digest(root) == source_digest  # the source is byte-identical

    # deterministic: the same review gives the same bytes
    before = tree_digest(out)
    run_accept({"data": str(data), "reviewed": str(reviewed), "mined": str(mined), "out": str(out)})
    assert tree_digest(out) == before


def test_accept_unreviewed_list_takes_every_exported_candidate(setup, mined, truth, source_digest):
    """The loop without a reviewer (README): mine's own candidates.xml as the 'review' accepts exactly the exported
    list, nothing rejected, and the restored hidden boxes are those the calibration counted as real."""
    _, data, root, _, tmp = setup
    out = run_accept({"data": str(data), "reviewed": str(mined / "candidates.xml"), "mined": str(mined),
                      "out": str(tmp / "unreviewed")}).parent
    rec = json.loads((mined / "mine.json").read_text())
    acc = json.loads((out / "accepted.json").read_text())
    at_cut = [(t["cands"][:, 5] >= rec["conf"], t["took"] >= 0) for t in truth.values()]  # (exported, real) per image
    exported = sum(int(e.sum()) for e, _ in at_cut)
    assert rec["candidates"] == exported > 0
    assert acc["summary"]["accepted"] == len(acc["added"]) == exported and acc["rejected"] == []
    assert sum(a["hidden"] for a in acc["added"]) == sum(int((e & r).sum()) for e, r in at_cut)
    assert tree_digest(root) == source_digest


def test_uncertain_band_becomes_ignore_regions(setup, truth, source_digest):
    """mine uncertain=S writes every candidate scoring in [S, conf) to uncertain.json (normalised, per image), with
    the band's real count from the manifest; accept turns them into ignore boxes of the new version's partial.json
    (read back as the trainer reads it), not into labels; ignore_uncertain=False and a changed file are handled."""
    from yolo_partial.partial_labels import load_for_data

    model, data, root, _, tmp = setup
    conf, floor = 0.01, LOW_CONF
    mined = run_mine({"model": str(model), "data": str(data), "out": str(tmp / "mined_band"), "conf": conf,
                      "uncertain": floor, "imgsz": IMGSZ, "batch": BATCH})
    band = {n: t["cands"][(t["cands"][:, 5] >= floor) & (t["cands"][:, 5] < conf)] for n, t in truth.items()}
    band = {n: b for n, b in band.items() if len(b)}
    assert band and sum(map(len, band.values())) < sum(len(t["cands"]) for t in truth.values())
    record = json.loads((mined / "mine.json").read_text())
    real = sum(int(((t["cands"][:, 5] >= floor) & (t["cands"][:, 5] < conf) & (t["took"] >= 0)).sum())
               for t in truth.values())
    assert record["uncertain"] == {"floor": floor, "boxes": sum(map(len, band.values())), "real": real}
    written = json.loads((mined / "uncertain.json").read_text())
    assert (written["floor"], written["conf"], set(written["images"])) == (floor, conf, set(band))
    for name, rows in written["images"].items():
        got = np.array(rows)
        w, h = truth[name]["size"]
        np.testing.assert_allclose(_pixels(got[:, :5], w, h), band[name][:, :5], atol=1e-6 * 160)
        np.testing.assert_allclose(got[:, 5], band[name][:, 5], atol=1e-5)

    out = run_accept({"data": str(data), "reviewed": str(mined / "candidates.xml"), "mined": str(mined),
                      "out": str(tmp / "ignored")}).parent
    assert 'partial: "partial.json"' in (out / "data.yaml").read_text()
    acc = json.loads((out / "accepted.json").read_text())
    assert acc["summary"]["ignore_boxes"] == sum(map(len, band.values()))
    exported = sum(int((t["cands"][:, 5] >= conf).sum()) for t in truth.values())
    assert len(acc["added"]) == exported  # the band is no label: only the exported list is added
    partial = load_for_data(out / "data.yaml")
    for name, t in truth.items():
        entry = partial.for_image(str(out / "images" / "train" / name))
        if name not in band:
            assert entry is None or not len(entry.ignore)
            continue
        assert entry.labeled is None and not entry.negative
        np.testing.assert_allclose(_pixels(np.c_[band[name][:, :1], entry.ignore], *t["size"])[:, 1:],
                                   band[name][:, 1:5], atol=1e-6 * 160)

    off = run_accept({"data": str(data), "reviewed": str(mined / "candidates.xml"), "mined": str(mined),
                      "out": str(tmp / "not_ignored"), "ignore_uncertain": False}).parent
    assert not (off / "partial.json").exists() and "partial:" not in (off / "data.yaml").read_text()
    assert _label_lines(off) == _label_lines(out)
    (mined / "uncertain.json").write_text((mined / "uncertain.json").read_text().replace("[", "[ ", 1))
    _one_line_error(PartialDataError, run_accept, {"data": str(data), "reviewed": str(mined / "candidates.xml"),
                                                   "mined": str(mined), "out": str(tmp / "tampered")},
                    match="uncertain.json: missing or changed since mine wrote it", nothing_at=tmp / "tampered")
    _one_line_error(PartialConfigError, run_mine, {"model": str(model), "data": str(data), "uncertain": 1.5},
                    match=r"uncertain=1.5 .*\(0, 1\)")
    assert tree_digest(root) == source_digest


def test_accept_json_review_relabel_delete_and_remove_labels(setup, mined, truth, source_digest):
    _, data, root, _, tmp = setup
    coco = json.loads((mined / "candidates.json").read_text())
    im = coco["images"][0]
    anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
    labels, cands = [a for a in anns if not a["candidate"]], [a for a in anns if a["candidate"]]
    first = dict(cands[0], category_id=cands[0]["category_id"] % 6 + 1)  # kept, class changed by the reviewer
    drawn = {"id": 99999, "image_id": im["id"], "category_id": 1, "bbox": [1.0, 2.0, 10.0, 12.0]}
    review = dict(coco, images=[im], annotations=labels[1:] + [first, drawn])  # first label deleted, others rejected
    path = tmp / "review.json"
    path.write_text(json.dumps(review))

    for remove in (False, True):
        out = run_accept({"reviewed": str(path), "mined": str(mined), "out": str(tmp / f"json{remove}"),
                          "remove_labels": remove}).parent
        acc = json.loads((out / "accepted.json").read_text())
        s = acc["summary"]
        assert (s["reviewed_images"], s["unreviewed_images"]) == (1, len(coco["images"]) - 1)
        assert (s["relabelled"], s["drawn"], s["rejected"]) == (1, 1, len(cands) - 1)
        assert {a["origin"]: a["cls"] for a in acc["added"]} == {"relabelled": first["category_id"] - 1, "drawn": 0}
        lines = (out / "labels" / "train" / Path(im["file_name"]).with_suffix(".txt")).read_text().splitlines()
        source = truth[im["file_name"]]["labels"]
        if remove:  # the deleted label is gone, listed under removed
            assert lines[:len(source) - 1] == source[1:] and len(acc["removed"]) == 1
            assert acc["removed"][0]["box"] == [float(v) for v in source[0].split()[1:]]
        else:
            assert lines[:len(source)] == source and acc["removed"] == [] and s["labels_kept"] == 1
        assert len(lines) == len(source) - remove + 2
    assert tree_digest(root) == source_digest


# -------------------------------------------------------------------------------------------------- bad input
def _one_line_error(exc, fn, *args, match: str, nothing_at: Path | None = None):
    with pytest.raises(exc, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    if nothing_at is not None:
        assert not nothing_at.exists()
        assert not list(nothing_at.parent.glob(f".{nothing_at.name}.*")), "temporary folder left behind"
    return str(e.value)


def test_mine_bad_inputs(setup, tmp_path):
    from ultralytics import YOLO

    model, data, *_ = setup
    out = tmp_path / "out"
    base = {"model": str(model), "data": str(data), "out": str(out), "imgsz": IMGSZ}
    YOLO("yolov8n-cls.yaml").save(tmp_path / "cls.pt")
    msg = _one_line_error(PartialDataError, run_mine, {**base, "model": str(tmp_path / "cls.pt")},
                          match="not a detector", nothing_at=out)
    assert "cls.pt" in msg
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    _one_line_error(PartialDataError, run_mine, {**base, "model": str(tmp_path / "junk.pt")},
                    match="junk.pt: not a loadable", nothing_at=out)
    _one_line_error(PartialDataError, run_mine, {**base, "model": str(tmp_path / "missing.pt")},
                    match="model not found", nothing_at=out)
    msg = _one_line_error(PartialDataError, run_mine, {**base, "split": "test"}, match="no 'test' images",
                          nothing_at=out)
    assert str(data) in msg
    _one_line_error(PartialConfigError, run_mine, {**base, "match_iou": 2}, match=r"match_iou=2 .*\(0, 1\]",
                    nothing_at=out)
    _one_line_error(PartialConfigError, run_mine, {**base, "iuo": 0.5}, match="unknown key 'iuo'.*iou",
                    nothing_at=out)
    _one_line_error(PartialConfigError, run_mine, {**base, "split": "training"},
                    match=r"split='training' is invalid: expected one of train\|val\|test")
    seven = tmp_path / "seven.yaml"
    seven.write_text(data.read_text() + "  6: octopus\n")
    _one_line_error(PartialDataError, run_mine, {**base, "data": str(seven)}, match="predicts 6 classes but .* names 7",
                    nothing_at=out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _one_line_error(PartialConfigError, run_mine, {**base, "out": str(foreign)}, match="not written by yolo-partial")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # an image that does not decode is named, and nothing is written
    bad = tmp_path / "bad" / "images" / "train"
    bad.mkdir(parents=True)
    (bad / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "bad.yaml").write_text(f"path: {tmp_path / 'bad'}\ntrain: images/train\nval: images/train\n"
                                       "names: [a, b, c, d, e, f]\n")
    _one_line_error(PartialDataError, run_mine, {**base, "data": str(tmp_path / "bad.yaml")},
                    match="broken.jpg: unreadable image", nothing_at=out)


def test_accept_bad_inputs(setup, mined, tmp_path, source_digest):
    _, data, root, *_ = setup
    out = tmp_path / "v"
    base = {"data": str(data), "mined": str(mined), "out": str(out)}
    xml = (mined / "candidates.xml").read_text()
    first = read_cvat_images(mined / "candidates.xml").images[0]
    name, label = first.name, first.boxes[0].label

    cases = {
        "other.xml": (xml.replace(f'name="{name}"', 'name="not-in-this-dataset.jpg"'),
                      r"other.xml: 1 of \d+ image names are not images of the train split.*not-in-this-dataset"),
        "label.xml": (xml.replace(f'label="{label}"', 'label="octopus"'), "label.xml: unknown label name 'octopus'"),
        "broken.xml": (xml[: len(xml) // 2], r"broken.xml: malformed XML"),
        "broken.json": ((mined / "candidates.json").read_text()[:100], "broken.json: malformed JSON"),
        "notcoco.json": ("[1, 2]", "notcoco.json: expected a COCO object"),
        "size.xml": (xml.replace(f'name="{name}" width="160"', f'name="{name}" width="320"'),
                     "size.xml: image .* is 320x160 there but 160x160 in the dataset"),
    }
    for file, (text, match) in cases.items():
        (tmp_path / file).write_text(text)
        _one_line_error(PartialDataError, run_accept, {**base, "reviewed": str(tmp_path / file)}, match=match,
                        nothing_at=out)
    _one_line_error(PartialConfigError, run_accept, {**base, "reviewed": str(tmp_path / "other.xml"),
                                                     "mined": str(tmp_path)}, match="holds no mine.json")
    _one_line_error(PartialConfigError, run_accept, {**base, "reviewed": str(mined / "candidates.xml"),
                                                     "out": str(root / "v")}, match="inside the source dataset")
    _one_line_error(PartialConfigError, run_accept, {**base, "reviewd": "x.xml"}, match="unknown key 'reviewd'")
    _one_line_error(PartialDataError, run_accept, {**base, "reviewed": str(tmp_path / "none.xml")},
                    match="reviewed file not found: .*none.xml", nothing_at=out)
    # the record itself edited in place: refused, it is what the review is compared with
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in ("mine.json", "candidates.json"):
        (edited / f).write_bytes((mined / f).read_bytes())
    text = (mined / "candidates.json").read_text()
    (edited / "candidates.json").write_text(text.replace('"candidate": true', '"candidate": false', 1))
    _one_line_error(PartialDataError, run_accept, {**base, "reviewed": str(edited / "candidates.json"),
                                                   "mined": str(edited)}, match="changed since mine wrote it",
                    nothing_at=out)
    assert tree_digest(root) == source_digest


# ------------------------------------------------------------------------------------------- units: CVAT, decide
def test_cvat_writer_and_reader_round_trip_odd_names(tmp_path):
    from yolo_partial.cvat import CvatAttribute, CvatBox, CvatImage, CvatLabel, write_cvat_images

    labels = [CvatLabel('fish & "chips" <1>', "#ff0000", (CvatAttribute("source", "select", False, "label",
                                                                         ("label", "candidate")),)),
              CvatLabel("étoile de mer")]
    images = [CvatImage(0, "sub dir/ä & b.jpg", 640, 480, [
        CvatBox(labels[0].name, (1.0, 2.5, 30.25, 40.0), {"source": "candidate", "score": "0.12345"}, source="auto"),
        CvatBox(labels[1].name, (0.0, 0.0, 639.99, 479.99), {"source": "label"})]), CvatImage(1, "empty.jpg", 8, 8)]
    path = tmp_path / "a.xml"
    write_cvat_images(path, images, labels, "task <1>")
    ET.parse(path)  # well-formed XML
    back = read_cvat_images(path)
    assert [(im.id, im.name, im.width, im.height) for im in back.images] == [(0, "sub dir/ä & b.jpg", 640, 480),
                                                                            (1, "empty.jpg", 8, 8)]
    assert [(b.label, b.xyxy, b.attributes, b.source) for b in back.images[0].boxes] == [
        (b.label, b.xyxy, b.attributes, b.source) for b in images[0].boxes]
    assert [lb.name for lb in back.labels] == [lb.name for lb in labels]
    assert back.labels[0].attributes == labels[0].attributes

    video = tmp_path / "video.xml"
    video.write_text('<annotations><version>1.1</version><track id="0" label="a"></track></annotations>')
    with pytest.raises(PartialDataError, match="video.xml: holds <track> elements"):
        read_cvat_images(video)
    bad = tmp_path / "bad.xml"
    bad.write_text(path.read_text().replace('xtl="1.00"', 'xtl="one"'))
    with pytest.raises(PartialDataError, match=r"bad.xml: <box label=.* has xtl='one': expected a number"):
        read_cvat_images(bad)


def test_decide_matches_back_within_rounding_and_pairs_edits():
    from yolo_partial.accept import decide

    labels = np.array([[0, 10, 10, 50, 50], [1, 100, 100, 140, 160]], float)
    cands = np.array([[2, 200, 10, 240, 60, 0.9], [2, 300, 10, 340, 60, 0.8], [3, 10, 200, 60, 260, 0.7],
                      [4, 400, 400, 420, 420, 0.6]], float)
    reviewed = np.array([
        [0, 10.004, 9.996, 50, 50],  # label 0, CVAT-rounded
        [1, 103, 104, 143, 164],  # label 1 moved
        [2, 200.004, 10, 240, 60.004],  # candidate 0 kept
        [5, 300, 10, 340, 60],  # candidate 1 kept with another class
        [3, 14, 205, 64, 265],  # candidate 2 moved
        [0, 500, 500, 520, 530],  # drawn by the reviewer
    ])  # candidate 3 deleted
    out = decide(reviewed, labels, cands, remove_labels=False)
    assert [(c, origin) for c, _, _, origin in out.added] == [(2, "candidate"), (5, "relabelled"), (3, "edited"),
                                                            (0, "drawn")]
    assert out.added[0][1].tolist() == [200, 10, 240, 60]  # the exported box, not CVAT's rounded copy
    assert out.added[2][1].tolist() == [14, 205, 64, 265]  # the reviewer's box
    assert [(c, s) for c, _, s in out.rejected] == [(4, 0.6)]
    assert out.removed == [] and out.kept == 1  # the moved label stays without remove_labels
    out = decide(reviewed, labels, cands, remove_labels=True)
    assert out.removed == [1] and out.kept == 0
    assert [(c, origin) for c, _, _, origin in out.added if origin == "label_edit"] == [(1, "label_edit")]
    out = decide(np.zeros((0, 5)), labels, cands, remove_labels=True)  # everything deleted
    assert out.removed == [0, 1] and len(out.rejected) == 4 and not out.added
