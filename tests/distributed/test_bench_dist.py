"""muonlab bench dist: argument checks, and one small run at W = 2 whose numbers must add up."""

from __future__ import annotations

import argparse
import json

import pytest

from muonlab.bench import dist as bench_dist
from muonlab.errors import CLIError
from muonlab.cli import main as cli_main


def _args(**kw):
    parser = argparse.ArgumentParser()
    bench_dist.add_arguments(parser)
    args = parser.parse_args([])
    for key, value in kw.items():
        setattr(args, key, value)
    return args


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(world_sizes="1,x"), "--world-sizes"),
        (dict(world_sizes="0"), "--world-sizes"),
        (dict(batch=10, world_sizes="3"), "--batch"),
        (dict(width=-1), "--width"),
    ],
)
def test_bad_arguments_are_refused_by_name(kw, message):
    with pytest.raises(CLIError, match=message):
        bench_dist._settings(_args(**kw))


def test_small_run_counts_bytes_and_flops_consistently(tmp_path, capsys):
    out = tmp_path / "dist.json"
    code = cli_main(["bench", "dist", "--world-sizes", "2", "--width", "16", "--blocks", "1", "--batch", "4",
                     "--repeats", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "vs AdamW" in printed and "wrote" in printed
    rows = {(r["parallel"], r["optimizer"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(p, o) for p in ("ddp", "fsdp") for o in ("adamw", "muon")}
    # DDP: gradient all-reduce 2(W-1)/W plus the result all-gather (W-1)/W of the matrices -> about 1.5x
    assert 1.3 < rows["ddp", "muon"]["bytes_vs_adamw"] < 1.6
    # FSDP2: 1 + 2/(3W) on a balanced model; a 1-block model is close to it
    assert 1.0 < rows["fsdp", "muon"]["bytes_vs_adamw"] <= 1 + 2 / 6 + 0.05
    # the same matrices are orthogonalized whichever way the parameters are laid out
    assert rows["ddp", "muon"]["orth_gflop_total"] == pytest.approx(rows["fsdp", "muon"]["orth_gflop_total"])
    assert rows["fsdp", "adamw"]["orth_gflop_total"] == 0


def test_bad_layout_arguments_are_refused_by_name():
    with pytest.raises(CLIError, match="--layout"):
        bench_dist._settings(_args(layout="hsdp,ring"))
    with pytest.raises(CLIError, match="--world-size"):
        bench_dist._settings(_args(layout="hsdp", world_size=3))


def test_layout_run_reports_bytes_the_plan_predicted_and_both_tp_polar_schemes(tmp_path, capsys):
    out = tmp_path / "layout.json"
    code = cli_main(["bench", "dist", "--layout", "tp", "--quick", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Gram scheme" in printed and "vs AdamW" in printed
    rows = {r["optimizer"]: r for r in json.loads(out.read_text())["rows"]}
    muon, adamw, schemes = rows["muon"], rows["adamw"], rows["tp_polar_schemes"]
    assert adamw["step_bytes_per_rank"] == 0 and adamw["bytes_vs_adamw"] == 1
    assert muon["plan_matches"] and muon["matrix_bytes_per_rank"] == muon["planned_matrix_bytes_per_rank"] > 0
    assert muon["bytes_vs_adamw"] > 1 and muon["orth_imbalance"] >= 1
    # the two schemes compute the same polar factors; the gather moves far fewer bytes at these shapes
    assert schemes["max_difference"] < 1e-4
    assert schemes["gather_bytes_per_rank"] < schemes["gram_bytes_per_rank"]
