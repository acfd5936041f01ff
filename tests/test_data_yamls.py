"""The shipped data YAMLs: well-formed, consistent with the converters, and their download scripts build the datasets."""

from pathlib import Path

import pytest
import yaml
from test_convert import devkit  # noqa: F401 - the tiny VOCdevkit fixture

from yolo_partial.convert.dusia import convert_dusia
from yolo_partial.data import PartialDataError, resolve_data
from yolo_partial.download import download_dataset
from yolo_partial.hidden import find_manifest, load_manifest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
BASES = {"dusia": 10, "voc": 20, "coco": 80}
PARTIAL = {"voc": ("easy", "hard", "extreme"), "coco": ("easy", "hard", "extreme", "miss50")}


def load(name: str) -> dict:
    return yaml.safe_load((DATA / f"{name}.yaml").read_text())


@pytest.mark.parametrize("base", BASES)
def test_base_yamls(base):
    cfg = load(base)
    assert list(cfg["names"]) == list(range(BASES[base]))
    assert {"path", "train", "val"} <= cfg.keys() and not Path(cfg["path"]).is_absolute()
    if "download" in cfg:
        compile(cfg["download"], f"data/{base}.yaml", "exec")


@pytest.mark.parametrize("base, mode", [(b, m) for b, modes in PARTIAL.items() for m in modes])
def test_partial_yamls_match_their_base(base, mode):
    cfg, full = load(f"{base}-{mode}"), load(base)
    assert cfg["names"] == full["names"]
    assert cfg["path"] == f"{full['path']}-{mode}" and cfg["hidden"] == "hidden.json"
    assert cfg["train"] == full["train"] and cfg["val"] == f"../{full['path']}/{full['val']}"
    assert f'mode="{mode}"' in cfg["download"] and f"mode={mode} seed=0" in (DATA / f"{base}-{mode}.yaml").read_text()
    compile(cfg["download"], f"data/{base}-{mode}.yaml", "exec")


def test_dusia_names_match_the_converter(tmp_path):
    """The converter's data.yaml names the classes exactly as data/dusia.yaml does; no usable XML is an error."""
    ann, lists = tmp_path / "cvat_annos", tmp_path / "idd_lsts"
    ann.mkdir()
    lists.mkdir()
    for split in ("trainkf", "valfull", "testfull"):
        (lists / f"{split}_auspec_cvat_frames.txt").write_text("")
    with pytest.raises(PartialDataError, match="no <video>.xml for any of the 0 videos"):
        convert_dusia(ann, lists, tmp_path / "out")
    (lists / "trainkf_auspec_cvat_frames.txt").write_text("v1_0000001\n")
    (ann / "v1.xml").write_text("<annotations><meta/></annotations>")
    convert_dusia(ann, lists, tmp_path / "out")
    assert yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())["names"] == load("dusia")["names"]


def test_missing_dataset_points_to_download(tmp_path, monkeypatch):
    monkeypatch.setattr("ultralytics.utils.DATASETS_DIR", tmp_path)
    with pytest.raises(PartialDataError, match="yolo-partial download data=") as e:
        resolve_data(str(DATA / "voc-hard.yaml"))
    assert "\n" not in str(e.value) and str(tmp_path / "voc0712-hard") in str(e.value)


def test_download_voc_then_split(tmp_path, monkeypatch, devkit):  # noqa: F811
    """`download data=voc-hard` fetches and converts VOC (network replaced by the tiny devkit), then splits it."""
    import shutil

    fetched = []

    def fake_download(urls, dir, **kwargs):
        fetched.extend(urls)
        shutil.copytree(devkit, Path(dir) / "VOCdevkit", dirs_exist_ok=True)

    monkeypatch.setattr("ultralytics.utils.DATASETS_DIR", tmp_path / "datasets")
    monkeypatch.setattr("ultralytics.utils.downloads.download", fake_download)
    root = download_dataset("voc-hard")
    assert root == tmp_path / "datasets" / "voc0712-hard"
    assert [u.rsplit("/", 1)[-1] for u in fetched] == [
        "VOCtrainval_06-Nov-2007.zip", "VOCtest_06-Nov-2007.zip", "VOCtrainval_11-May-2012.zip"]  # fmt: skip
    assert resolve_data(str(DATA / "voc-hard.yaml")) == str(DATA / "voc-hard.yaml")  # train and val both found
    manifest = load_manifest(find_manifest(DATA / "voc-hard.yaml"))
    # the devkit's only multi-box train image keeps 1 of its 2 known-class boxes under hard
    assert manifest.summary["removed"] == 1
    assert download_dataset("voc-hard") == root and len(fetched) == 3  # present: nothing fetched again


def test_ultralytics_dataset_missing_offline_is_refused(tmp_path, monkeypatch):
    """Offline, Ultralytics' own coco8.yaml without its images on this machine is a one-line error, not a download
    attempt; with the images in place it is left for Ultralytics to resolve."""
    import ultralytics.utils

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setattr(ultralytics.utils, "DATASETS_DIR", tmp_path)
    with pytest.raises(PartialDataError, match=r"data=coco8.yaml: Ultralytics' train images are not on this machine "
                                               r".*nothing is downloaded"):
        resolve_data("coco8.yaml")
    for split in ("train", "val"):
        (tmp_path / "coco8" / "images" / split).mkdir(parents=True)
    assert resolve_data("coco8.yaml") == "coco8.yaml"
