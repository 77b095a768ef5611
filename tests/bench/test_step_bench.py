"""`muonlab bench step` runs end to end on a tiny model and writes JSON with the documented fields."""

import json

import torch

from muonlab.bench import step as step_bench
from muonlab.cli import main


def test_bench_step_tiny_writes_json(tmp_path, capsys):
    out = tmp_path / "step.json"
    code = main(["bench", "step", "--quick", "--width", "16", "--vocab", "50", "--repeats", "1",
                 "--out", str(out)])
    assert code == 0
    assert "× torch Muon fp32" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["benchmark"] == "step" and result["hidden_matrices"] == 6
    rows = {row["key"]: row for row in result["rows"]}
    assert set(rows) == {"muonlab_default", "muonlab_polar_express", "muonlab_keller", "muonlab_normuon",
                         "muonlab_no_telemetry", "muonlab_bf16_state", "muonlab_int8_state",
                         "torch_muon_fp32", "torch_muon_bf16", "adamw_foreach", "adamw_fused"}
    # low-precision state: half the fp32 state's bytes in bf16, about a quarter in int8 (1-D tensors stay fp32)
    assert rows["muonlab_bf16_state"]["state_bytes"] * 2 == rows["muonlab_default"]["state_bytes"]
    assert rows["muonlab_int8_state"]["state_bytes"] < 0.4 * rows["muonlab_default"]["state_bytes"]
    assert rows["muonlab_no_telemetry"]["state_bytes"] == rows["muonlab_default"]["state_bytes"]
    # NorMuon: the momentum and one second moment per row; a steady-state step keeps nothing either
    assert rows["muonlab_normuon"]["state_tensors_per_matrix"] == 2 and rows["muonlab_normuon"]["net_bytes"] == 0
    for key, row in rows.items():
        assert row["median_s"] > 0
        assert row["time_vs_adamw_foreach"] == row["median_s"] / rows["adamw_foreach"]["median_s"]
    for key in ("muonlab_no_telemetry", "muonlab_bf16_state", "muonlab_int8_state"):
        assert rows[key]["net_bytes"] == 0 and rows[key]["peak_bytes"] > 0 and rows[key]["matmul_flops"] > 0
    for key in ("muonlab_default", "muonlab_polar_express", "muonlab_keller", "torch_muon_fp32"):
        row = rows[key]
        assert row["matmul_flops"] > 0 and row["floor_s"] > 0
        assert row["net_bytes"] == 0  # a steady-state step keeps nothing
        assert row["peak_bytes"] > 0
        # one momentum buffer per matrix, nothing else
        assert row["state_tensors_per_matrix"] == 1
        assert set(row["orthogonality"]) == {"16x16", "64x16", "16x64"}
    # Keller's quintic, computed by muonlab and by torch's own (fp32) iteration, reaches the same σ range.
    for shape, o in rows["muonlab_keller"]["orthogonality"].items():
        t = rows["torch_muon_fp32"]["orthogonality"][shape]
        assert abs(o["sigma_min"] - t["sigma_min"]) < 1e-3 and abs(o["sigma_max"] - t["sigma_max"]) < 1e-3
    bf16 = rows["torch_muon_bf16"]
    assert bf16["estimated"] and bf16["measured_on"] == ["16x16"]
    # AdamW keeps two moments per parameter: twice Muon's momentum on the matrices
    assert rows["adamw_foreach"]["state_tensors_per_matrix"] == 2

    # On CUDA torch's shipped step is timed like every row (no estimate): the report must not need the estimate's fields.
    timed = dict(result, rows=[dict(r, estimated=False) if r["key"] == "torch_muon_bf16" else r for r in result["rows"]])
    for r in timed["rows"]:
        if r["key"] == "torch_muon_bf16":
            del r["measured_on"], r["measured_s"]
    text = step_bench.report(timed)
    assert "estimated by flop count" not in text
    assert "estimated by flop count" in step_bench.report(result)


def test_fp32_iteration_matches_torch_bf16_iteration():
    """The patched fp32 iteration is torch.optim.Muon's, up to bf16 rounding."""
    from torch.optim import _muon

    g = torch.randn(24, 40)
    ours = step_bench.newton_schulz_fp32(g, step_bench.KELLER, 5, 1e-7)
    theirs = _muon._zeropower_via_newtonschulz(g, step_bench.KELLER, 5, 1e-7).float()
    assert (ours - theirs).norm() / theirs.norm() < 3e-2
    with step_bench.torch_muon_fp32_iteration():
        assert _muon._zeropower_via_newtonschulz is step_bench.newton_schulz_fp32
    assert _muon._zeropower_via_newtonschulz is not step_bench.newton_schulz_fp32


def test_profile_step_memory_sees_a_temporary():
    x = torch.randn(256, 256)
    keep = []
    memory = step_bench.profile_step_memory(lambda: keep.append((x @ x) @ x))
    assert memory["peak_bytes"] >= 2 * 256 * 256 * 4  # the intermediate product and the result
    assert memory["net_bytes"] == 256 * 256 * 4  # only the result stays
