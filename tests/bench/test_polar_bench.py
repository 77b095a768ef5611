"""`muonlab bench polar` runs end to end on tiny shapes and writes JSON with the documented fields."""

import json

import pytest

from muonlab.cli import main


def test_bench_polar_tiny_writes_json(tmp_path, capsys):
    out = tmp_path / "polar.json"
    code = main([
        "bench", "polar", "--shapes", "8x8,6x20,20x6", "--kappas", "10,1000", "--repeats", "1",
        "--methods", "newton_schulz:5,newton_schulz_direct:5,polar_express:8,gram_newton_schulz,qdwh,svd,cubic:30,torch_muon_bf16",
        "--out", str(out),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "% of matmul" in printed and "σ range" in printed
    result = json.loads(out.read_text())
    assert result["benchmark"] == "polar"
    assert set(result["matmul"]) == {"8x8", "6x20", "20x6"}
    assert all(v["gflops"] > 0 for v in result["matmul"].values())
    rows = result["rows"]
    assert len(rows) == 3 * 8
    for row in rows:
        assert row["median_s"] > 0
        if row["method"] in ("svd", "qdwh"):
            assert row["gflops"] is None and row["fraction_of_matmul"] is None
        else:
            assert row["gflops"] > 0
            assert row["fraction_of_matmul"] == pytest.approx(row["gflops"] / row["matmul_gflops"])
        # torch_muon_bf16 runs once, at the first κ when 100 is not asked for
        kappas = {"10"} if row["method"] == "torch_muon_bf16" else {"10", "1000"}
        assert set(row["accuracy"]) == kappas
        for acc in row["accuracy"].values():
            assert 0 <= acc["sigma_min"] <= acc["sigma_max"]
            assert acc["rel_err"] >= 0
    by = {(r["label"], r["shape"]): r for r in rows}
    # The exact methods really are exact, and the flop count follows the documented formula.
    for shape in ("8x8", "6x20", "20x6"):
        assert by[("svd", shape)]["accuracy"]["1000"]["rel_err"] < 1e-3
        assert by[("qdwh", shape)]["accuracy"]["1000"]["rel_err"] < 1e-3
        assert by[("polar_express×8", shape)]["accuracy"]["10"]["rel_err"] < 1e-4
    direct = 5 * (4 * 6 * 6 * 20 + 2 * 6**3)
    gram = 4 * 6 * 6 * 20 + 34 * 6**3
    assert by[("newton_schulz_direct×5", "6x20")]["flops"] == direct
    assert by[("newton_schulz_direct×5", "20x6")]["flops"] == direct
    # aspect ratio ≥ 2: polar() evaluates Keller's quintic on the Gram matrix; square: directly
    assert by[("newton_schulz×5", "6x20")]["flops"] == gram == by[("gram_newton_schulz", "20x6")]["flops"]
    assert by[("newton_schulz×5", "8x8")]["flops"] == 5 * 6 * 8**3
    # the Gram form is the same polynomial: same accuracy as the direct iteration
    for kappa in ("10", "1000"):
        a = by[("newton_schulz×5", "6x20")]["accuracy"][kappa]
        b = by[("newton_schulz_direct×5", "6x20")]["accuracy"][kappa]
        assert abs(a["sigma_min"] - b["sigma_min"]) < 1e-3 and abs(a["sigma_max"] - b["sigma_max"]) < 1e-3


def test_bench_polar_rejects_bad_options(capsys):
    assert main(["bench", "polar", "--shapes", "8by8"]) == 2
    assert "--shapes" in capsys.readouterr().err
    assert main(["bench", "polar", "--methods", "magic:3"]) == 2
    assert "--methods" in capsys.readouterr().err


def test_bench_polar_zolo_vs_qdwh_in_float64(tmp_path, capsys):
    """The converging methods' comparison: same accuracy (to the test matrices' conditioning), iteration counts
    from the registry (ZOLO-PD 2, QDWH 6 in float64), operation counts with the factorizations."""
    out = tmp_path / "polar64.json"
    code = main(["bench", "polar", "--shapes", "16x16,10x30", "--kappas", "10,1e8", "--repeats", "1",
                 "--methods", "qdwh,zolo_pd,svd", "--dtype", "float64", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Converging methods" in printed and "iterations" in printed
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 6
    by = {(r["method"], r["shape"]): r for r in rows}
    for shape in ("16x16", "10x30"):
        zolo, qdwh, svd = by[("zolo_pd", shape)], by[("qdwh", shape)], by[("svd", shape)]
        assert zolo["iterations"] == 2 and qdwh["iterations"] == 6 and svd["iterations"] is None
        assert all(r["iteration_dtype"] == "float64" and r["dtype"] == "float64" for r in (zolo, qdwh, svd))
        assert zolo["work_flops"] > qdwh["work_flops"] > 0 and svd["work_flops"] is None
        for kappa, tol in (("10", 1e-13), ("1e+08", 1e-7)):
            assert zolo["accuracy"][kappa]["orthogonality"] < 1e-13
            assert zolo["accuracy"][kappa]["rel_err"] < tol
            # the same accuracy as the SVD (the error at κ = 1e8 is the matrix's own conditioning)
            assert zolo["accuracy"][kappa]["rel_err"] < 10 * svd["accuracy"][kappa]["rel_err"] + 1e-14


def test_bench_polar_rejects_bad_dtype(capsys):
    assert main(["bench", "polar", "--dtype", "bfloat16"]) == 2
    assert "--dtype" in capsys.readouterr().err
