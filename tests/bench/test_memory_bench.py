"""`muonlab bench memory`: state bytes per element for each state dtype, scaled to the preset's blocks."""

import json

import pytest

from muonlab.cli import main


def test_bench_memory_tiny_writes_json(tmp_path, capsys):
    out = tmp_path / "memory.json"
    assert main(["bench", "memory", "--width", "256", "--vocab", "300", "--out", str(out)]) == 0
    assert "B/elem matrices" in capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {r["state_dtype"]: r for r in result["rows"]}
    assert set(rows) == {"float32", "bfloat16", "int8"}
    # Muon's momentum: 4 → 2 → 1 + 4/256 bytes per element (rows of 256 or 1024: whole blocks)
    assert rows["float32"]["hidden_bytes_per_element"] == 4
    assert rows["bfloat16"]["hidden_bytes_per_element"] == 2
    assert rows["int8"]["hidden_bytes_per_element"] == pytest.approx(1 + 4 / 256)
    # the AdamW part: m and v; its 1-D gains and biases keep fp32 under int8
    assert rows["float32"]["adamw_bytes_per_element"] == 8 and rows["bfloat16"]["adamw_bytes_per_element"] == 4
    assert 2 * (1 + 4 / 256) < rows["int8"]["adamw_bytes_per_element"] <= 2.2
    for r in rows.values():
        assert r["net_bytes"] == 0 and r["peak_bytes"] > 0
        assert r["preset_hidden_state_bytes"] == 12 * r["hidden_state_bytes"]  # 1 block measured, 12 in 124m
    assert rows["int8"]["state_vs_float32"] < 0.3


def test_bench_memory_refuses_a_bad_dtype(capsys):
    assert main(["bench", "memory", "--state-dtypes", "fp7", "--width", "16", "--vocab", "10"]) != 0
    assert "--state-dtypes: state_dtype must be one of" in capsys.readouterr().err
