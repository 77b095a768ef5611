"""`muonlab bench family` runs end to end on a tiny model and writes JSON with the documented fields."""

import json

from muonlab.cli import main


def test_bench_family_tiny_writes_json(tmp_path, capsys):
    out = tmp_path / "family.json"
    code = main(["bench", "family", "--quick", "--width", "16", "--vocab", "50", "--repeats", "1",
                 "--optimizers", "polargrad,msgds,adamq,msgdz,adamw,polargrad_qdwh", "--out", str(out)])
    assert code == 0
    assert "× muon" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["benchmark"] == "family" and result["hidden_matrices"] == 12 and result["kappas"] == [10.0, 100.0, 1000.0]
    rows = {row["key"]: row for row in result["rows"]}
    assert list(rows)[0] == "muon" and set(rows) == {"muon", "polargrad", "msgds", "adamq", "msgdz", "adamw", "polargrad_qdwh"}
    assert rows["muon"]["ratio_to_muon"] == 1.0
    for key, row in rows.items():
        assert row["median_s"] > 0 and row["ratio_to_muon"] == row["median_s"] / rows["muon"]["median_s"]
    assert rows["polargrad"]["target"] == 1.5 and rows["msgds"]["target"] == 3.0 and rows["msgdz"]["target"] == 1.3
    assert rows["adamw"]["accuracy"] is None  # torch's own optimizer: no matrix transform
    for key in ("muon", "polargrad", "msgds", "adamq", "msgdz", "polargrad_qdwh"):
        acc = rows[key]["accuracy"]
        assert set(acc) == {"10", "100", "1000"}
        assert 0 <= acc["10"]["rel_err"] < 0.2 and acc["10"]["sigma_ratio_min"] <= acc["10"]["sigma_ratio_max"]
    # ν of PolarGrad's default within its bound; QDWH converged
    for kappa in ("10", "100", "1000"):
        assert abs(rows["polargrad"]["accuracy"][kappa]["nu_rel_err"]) < 0.01
        assert abs(rows["polargrad_qdwh"]["accuracy"][kappa]["nu_rel_err"]) < 1e-5
    assert "nu_rel_err" not in rows["msgds"]["accuracy"]["10"]
