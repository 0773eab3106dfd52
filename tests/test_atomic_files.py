"""atomic_files: the target holds the old or the whole new content, never a partial one."""

from __future__ import annotations

import json
import os

import pytest

from tfmot_wfn.utils.atomic_files import atomic_path, write_bytes_atomically, write_json_atomically


def test_success_replaces_the_target_and_keeps_the_suffix(tmp_path):
    target = tmp_path / "sub" / "model.keras"  # the folder is created
    with atomic_path(target) as tmp:
        assert tmp.endswith("model.keras") and os.path.dirname(tmp) == str(target.parent)
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["model.keras"]


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.tflite"
    write_bytes_atomically(target, b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_json_is_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomically(target, {"stage": 1, "rows": [1.5]})
    assert json.loads(target.read_text()) == {"stage": 1, "rows": [1.5]}
    assert target.read_text().startswith('{\n  "stage"')  # indent=2 by default
    with pytest.raises(TypeError, match="not JSON serializable"):  # fails midway: old file kept
        write_json_atomically(target, {"stage": 2, "bad": object()})
    assert json.loads(target.read_text()) == {"stage": 1, "rows": [1.5]}
    assert os.listdir(tmp_path) == ["state.json"]
    write_json_atomically(target, {"n": 3}, default=str, indent=None)
    assert target.read_text() == '{"n": 3}'


def test_reports_write_strict_json(tmp_path):
    import dataclasses

    from tfmot_wfn.utils.json_report import JsonReport

    @dataclasses.dataclass
    class Report(JsonReport):
        se: float
        rows: list

    path = tmp_path / "r.json"
    Report(float("nan"), [{"x": float("inf"), "y": 1.5}, (2.0, -float("inf"))]).to_json(path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"se": None, "rows": [{"x": None, "y": 1.5}, [2.0, None]]}
