"""muonlab.jsonio.write_json, the one JSON writer of the lab (results, benchmarks, trainer runs)."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch

from muonlab.jsonio import write_json


def test_non_finite_floats_become_null_and_everything_else_is_kept(tmp_path):
    path = tmp_path / "sub" / "r.json"  # the folder is created
    write_json(path, {"nan": math.nan, "inf": [1.0, -math.inf, (2, 3.5)], 7: {"dtype": torch.float32}, "ok": None})
    text = path.read_text()
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": [1.0, None, [2, 3.5]], "7": {"dtype": "torch.float32"}, "ok": None}


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})
    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot be written")

    with pytest.raises(RuntimeError, match="cannot be written"):
        write_json(path, {"a": [2.0] * 1000 + [Unprintable()]})  # fails after part of the file was written
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_the_file_gets_the_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
