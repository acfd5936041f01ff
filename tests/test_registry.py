"""The method registry: every method owns its keys and its construction, ships a cfg and a README row; the loss
composes whatever is registered; shipped YAMLs resolve by name."""

from pathlib import Path

import pytest
import yaml

from conftest import REPO
from yolo_partial import assets
from yolo_partial.data import find_cfg, find_data_yaml
from yolo_partial.errors import PartialDataError
from yolo_partial.keys import METHOD_DEFAULTS, METHOD_KEYS, method_args
from yolo_partial.losses.method import COMMON_KEYS, Method
from yolo_partial.losses.comining import CoMining
from yolo_partial.losses.registry import METHODS, build_methods
from yolo_partial.losses.teacher import Teacher
from yolo_partial.models import resolve_model
from yolo_partial.nonfinite import KEYS as GUARD_KEYS

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.NAME)
def test_method_owns_keys_defaults_off(method):
    assert issubclass(method, Method) and method.NAME and method.KEYS and method.SWITCH in method.KEYS
    for name, key in method.KEYS.items():
        assert METHOD_KEYS[name] is key and key.help, name
    assert method.from_args(METHOD_DEFAULTS) is None  # the defaults leave the loss stock


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.NAME)
def test_method_has_a_shipped_cfg_that_turns_it_on(method):
    on = []
    for path in assets.shipped("cfg").values():
        keys = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k in METHOD_KEYS}
        if method.from_args(method_args({**METHOD_DEFAULTS, **keys})) is not None:
            on.append(path.name)
    assert on, f"no shipped cfg turns {method.NAME} on"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.NAME)
def test_method_has_a_readme_row_for_each_key(method):
    table = README[README.index("## Methods and keys"):README.index("**Box Prediction Rebalancing**")]
    for name in method.KEYS:
        assert f"`{name}`" in table, f"README's key table lacks {name}"


def test_key_table_is_the_methods_plus_the_guard():
    names = [k for m in METHODS for k in m.KEYS] + list(COMMON_KEYS) + list(GUARD_KEYS)
    assert sorted(METHOD_KEYS) == sorted(names) and len(names) == len(set(names))


def test_build_methods_in_registry_order():
    k = method_args({**METHOD_DEFAULTS, "class_partial": True, "brl": True, "scb": True, "drop_neg_obj": 0.5,
                     "comining": True})
    assert [type(m) for m in build_methods(k)] == [m for m in METHODS if m is not Teacher]
    k = method_args({**k, "comining": False, "teacher": True})  # the teacher refuses comining
    assert [type(m) for m in build_methods(k)] == [m for m in METHODS if m is not CoMining]


def test_shipped_names_resolve_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the clone: no cfg/ or data/ here
    for name in ("brl", "brl.yaml", "cfg/brl.yaml"):
        assert find_cfg(name) == assets.folder("cfg") / "brl.yaml"
    for name in ("dusia", "dusia.yaml", "data/dusia.yaml"):
        assert find_data_yaml(name) == assets.folder("data") / "dusia.yaml"
    assert find_data_yaml("coco.yaml") == assets.folder("data") / "coco.yaml"  # ours wins over Ultralytics' coco.yaml
    assert find_data_yaml("coco8.yaml") == "coco8.yaml"  # Ultralytics' own, left for it to resolve
    assert resolve_model("yolov5n-obj.yaml") == str(assets.folder("models") / "yolov5n-obj.yaml")
    assert resolve_model("yolov8n.yaml") == "yolov8n.yaml"


def test_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("brl.yaml").write_text("brl: True\n")
    assert find_cfg("brl.yaml") == Path("brl.yaml")


def test_unknown_names_list_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PartialDataError, match=r"cfg file not found: nope\.yaml: expected a path or a shipped name \(.*brl\.yaml"):
        find_cfg("nope.yaml")
    with pytest.raises(PartialDataError, match=r"data YAML not found: dusa: .*dusia\.yaml"):
        find_data_yaml("dusa")


def test_python_trainer_resolves_shipped_cfg_and_data(tmp_path, monkeypatch):
    from yolo_partial import PartialDetectionTrainer

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PartialDataError, match="DUSIA frames are not there.*yolo-partial convert dusia annotations="):
        PartialDetectionTrainer(overrides={"cfg": "brl", "data": "dusia", "model": "yolov8n.yaml"})
