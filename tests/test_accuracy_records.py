"""benchmarks/accuracy.py's run identity: which code and settings a record stands for, and CODE_EQUIVALENT."""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import accuracy  # noqa: E402


@pytest.fixture
def fake_data(monkeypatch, tmp_path):
    """A data YAML path whose label hash is fixed (settings_hash reads only its name and that hash)."""
    monkeypatch.setattr(accuracy, "labels_sha1", lambda data: "labels")
    return str(tmp_path / "shapes-extreme-s0" / "data.yaml")


def test_code_hash_covers_core_and_enabled_methods_only():
    assert accuracy.code_hash({}) == accuracy.code_hash({"teacher": False})  # no method on: no file of ours
    teacher, both = accuracy.code_hash({"teacher": True}), accuracy.code_hash({"teacher": True, "drop_neg_obj": 0.75})
    assert len({teacher, both, accuracy.code_hash({})}) == 3
    # a method's keys other than its switch change no file: the same code
    assert accuracy.code_hash({"teacher": True, "teacher_calib": "fixed"}) == teacher
    # a file that shapes a run only under a key enters its hash only then (KEYED_CODE)
    relabel = accuracy.code_hash({"teacher": True, "teacher_relabel": 5})
    assert relabel not in (teacher, both) and accuracy.code_hash({"teacher": True, "teacher_relabel": 0}) == teacher


def test_equivalent_edit_keeps_records_only_for_the_settings_it_covers(fake_data, monkeypatch):
    keys = {"teacher": True}
    fixed = {"teacher": True, "teacher_calib": "fixed"}
    monkeypatch.setattr(accuracy, "CODE_EQUIVALENT", ())
    h_new, s_new = accuracy.settings_hash(fake_data, keys, 0)
    h_fixed, _ = accuracy.settings_hash(fake_data, fixed, 0)
    code = accuracy.code_hash(keys)
    assert s_new["code"] == code
    monkeypatch.setattr(accuracy, "CODE_EQUIVALENT", ((code, "0" * 40, {"teacher_calib": "recall"}),))
    h_old, s_old = accuracy.settings_hash(fake_data, keys, 0)
    assert s_old["code"] == "0" * 40 and h_old != h_new  # the record of the code before is the one looked up
    assert s_old["method"] == s_new["method"] and s_old["data_sha1"] == s_new["data_sha1"]
    assert accuracy.settings_hash(fake_data, fixed, 0)[0] == h_fixed  # outside the declaration: the new code's hash
    monkeypatch.setattr(accuracy, "CODE_EQUIVALENT", (("1" * 40, "0" * 40, {}),))  # another code: no effect
    assert accuracy.settings_hash(fake_data, keys, 0)[0] == h_new


def test_committed_equivalences_name_real_before_and_after():
    """Every committed entry maps a hash to a different one and declares the settings it covers."""
    for after, before, covers in accuracy.CODE_EQUIVALENT:
        assert len(after) == len(before) == 40 and after != before
        assert isinstance(covers, dict)


def test_round_two_row_is_named_by_its_first_round_and_the_loop_code(fake_data):
    """A mined row's record stands for its first round's run and the mine/accept code, known before the mined data
    exists (so --report finds it from the committed records alone)."""
    for row, first in accuracy.ROUND_TWO.items():
        name, settings, keys = accuracy.run_name(row, "extreme", fake_data, 1)
        first_name = accuracy.run_name(first, "extreme", fake_data, 1)[0]
        assert keys == accuracy.ROUND_TWO_KEYS.get(row, accuracy.ROWS[first]) and settings["round_one"] == first_name
        assert len(settings["loop_code"]) == 40 and name != first_name
        assert name.startswith(row.replace("+", "_") + "-extreme-s1-")
        assert accuracy.run_name(row, "extreme", fake_data, 2)[1]["round_one"] != first_name  # per seed


def test_added_key_at_its_old_behaviour_leaves_the_settings_alone(fake_data):
    """A key added later (ADDED_KEYS) at the value that reproduces the code before it is not in a run's settings,
    so records made before it existed stand; at any other value it is, and names another run."""
    assert accuracy.ADDED_KEYS == {"cm_jitter": "reference", "cm_classes": "any", "teacher_precision": 0.9,
                                   "teacher_relabel": 0}
    _, plain = accuracy.settings_hash(fake_data, {"comining": True}, 0)
    _, ref = accuracy.settings_hash(fake_data, {"comining": True, "cm_jitter": "reference"}, 0)
    h_hsv, hsv = accuracy.settings_hash(fake_data, {"comining": True, "cm_jitter": "hsv"}, 0)
    assert "cm_jitter" not in plain["method"] and plain == ref and "cm_score" in plain["method"]
    assert hsv["method"]["cm_jitter"] == "hsv" and h_hsv != accuracy.settings_hash(fake_data, {"comining": True}, 0)[0]
