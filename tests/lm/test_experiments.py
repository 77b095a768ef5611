import argparse
import dataclasses
import json
import math

import pytest

from muonlab.experiments import lm_compare, qk_clip
from muonlab.experiments.registry import EXPERIMENTS


def settings_of(**options) -> "lm_compare.Settings":
    return lm_compare.Settings.from_options(lm_compare.Options(**options))


def test_registered():
    assert EXPERIMENTS["lm-compare"] == "muonlab.experiments.lm_compare:run"
    assert EXPERIMENTS["qk-clip"] == "muonlab.experiments.qk_clip:run"


def test_steps_to_reach_interpolates_between_evaluations():
    steps, losses = [10, 20, 30], [3.0, 2.0, 1.5]
    assert lm_compare.steps_to_reach(steps, losses, 2.5) == pytest.approx(15.0)
    assert lm_compare.steps_to_reach(steps, losses, 3.5) == 10.0
    assert lm_compare.steps_to_reach(steps, losses, 1.0) is None
    assert lm_compare.steps_to_reach(steps, [float("nan"), 2.0, 1.0], 1.5) == pytest.approx(25.0)


def test_rank_correlation_and_optimizer_parsing():
    assert lm_compare.spearman([1, 2, 3], [1, 2, 3]) == 1.0
    assert lm_compare.spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert lm_compare.parse_optimizers(None) == list(lm_compare.DEFAULT_OPTIMIZERS)
    assert lm_compare.parse_optimizers("Muon, adamw") == ["muon", "adamw"]
    with pytest.raises(ValueError, match="unknown"):
        lm_compare.parse_optimizers("muon,lion")
    # work D's eight are all in the comparison
    assert set(lm_compare.WORK_D) <= set(lm_compare.DEFAULT_OPTIMIZERS)


def test_quick_settings_are_small_and_full_settings_use_the_tiny_model():
    quick = settings_of(quick=True, steps=None, seed=0, out="x")
    full = settings_of(quick=False, steps=None, seed=0, out="x")
    assert quick.model == "micro" and quick.lr_grid == (1.0,) and quick.max_extensions == 0
    assert full.model == "tiny" and len(full.lr_grid) >= 3 and full.max_extensions >= 1
    gpu = settings_of(model="gpt2", steps=800, jobs=3, device="cpu")
    assert (gpu.batch_size, gpu.block_size, gpu.steps, gpu.jobs) == (16, 1024, 800, 3)
    # the registry's argparse Namespace reads as the same options
    assert lm_compare.Options.from_namespace(argparse.Namespace(model="gpt2", steps=800, jobs=3, device="cpu",
                                                                kappas=None)) == lm_compare.Options(
        model="gpt2", steps=800, jobs=3, device="cpu")
    assert qk_clip.settings(argparse.Namespace(quick=True, steps=None, seed=0, out="x"))["optimizer"] == "muon"


# ---------------------------------------------------------------------------------------------- lr grid extension
def fake_run(opt, lr, loss, steps=100, sec_per_step=0.01, curve=None):
    val_steps = [25, 50, 75, 100]
    return {"optimizer": opt, "peak_lr": lr, "final_val_loss": loss, "diverged": not math.isfinite(loss),
            "val_steps": val_steps, "val_losses": curve or [loss + 0.3, loss + 0.2, loss + 0.1, loss],
            "steps_done": steps, "train_time_s": steps * sec_per_step, "tokens_per_s": 1.0}


def bowl(best_lr):
    """Final loss as a function of lr with its minimum at best_lr (log-quadratic), inf far above it."""
    return lambda lr: math.inf if lr > 30 * best_lr else 1.0 + math.log(lr / best_lr) ** 2


@pytest.mark.parametrize("best_lr,expect_lrs,expect_edge", [
    (0.01, [0.005, 0.01, 0.02], None),                               # bracketed at once: no extension
    (0.0026, [0.00125, 0.0025, 0.005, 0.01, 0.02], None),            # extended down twice, then bracketed
    (0.07, [0.005, 0.01, 0.02, 0.04, 0.08, 0.16], None),             # extended up
    (1e-5, [0.000625, 0.00125, 0.0025, 0.005, 0.01, 0.02], "low"),   # limit reached: still at the low edge
])
def test_sweep_extends_the_grid_until_the_best_is_bracketed(tmp_path, best_lr, expect_lrs, expect_edge, monkeypatch):
    from muonlab.tasks.lm import train as train_mod

    monkeypatch.setitem(train_mod.DEFAULT_LR, "muon", 0.01)
    loss = bowl(best_lr)
    s = dataclasses.replace(settings_of(device="cpu", jobs=1, steps=100), max_extensions=3)
    runs, extended = lm_compare.sweep(["muon"], s, tmp_path, run_fn=lambda job: fake_run(job["optimizer"], job["lr"],
                                      loss(job["lr"])), progress=False)
    assert [r["peak_lr"] for r in runs] == pytest.approx(expect_lrs)
    row = lm_compare.build_table(runs, extended)[0]
    assert row["lr_at_grid_edge"] == expect_edge
    assert sum(extended["muon"].values()) == len(expect_lrs) - 3
    md = lm_compare.markdown_table([row], s, None)
    assert ("still at a grid edge" in md) == (expect_edge is not None)


def test_every_run_diverged_extends_downwards():
    runs = [fake_run("msgd", lr, math.inf) for lr in (0.1, 0.2, 0.4)]
    extended = {}
    assert lm_compare.best_run(runs) is None and lm_compare.edge_of(runs) == "low"
    assert lm_compare.extension_lr(runs, extended, 3) == pytest.approx(0.05) and extended == {"low": 1}
    assert lm_compare.extension_lr(runs, {"low": 3}, 3) is None


# ---------------------------------------------------------------------------------------------- the table
def test_table_time_to_target_uses_each_runs_own_step_time():
    # AdamW ends at 2.0 after 100 steps at 10 ms/step (1 s); Muon reaches 2.0 at step 50 but costs 30 ms/step
    adamw = fake_run("adamw", 3e-3, 2.0, sec_per_step=0.010, curve=[2.6, 2.4, 2.2, 2.0])
    muon = fake_run("muon", 2e-2, 1.6, sec_per_step=0.030, curve=[2.4, 2.0, 1.8, 1.6])
    slow = fake_run("msgd", 0.3, 2.5, sec_per_step=0.005, curve=[2.9, 2.8, 2.6, 2.5])
    worse_adamw = fake_run("adamw", 6e-3, 2.3)
    table = {r["optimizer"]: r for r in lm_compare.build_table([adamw, worse_adamw, muon, slow])}
    assert table["adamw"]["best_lr"] == 3e-3 and table["adamw"]["final_val_loss"] == 2.0
    assert table["adamw"]["steps_to_adamw_final"] == 100 and table["adamw"]["time_ratio_vs_adamw"] == pytest.approx(1)
    assert table["muon"]["steps_to_adamw_final"] == pytest.approx(50)
    assert table["muon"]["step_ratio_vs_adamw"] == pytest.approx(0.5)
    assert table["muon"]["time_to_adamw_final_s"] == pytest.approx(1.5)          # 50 steps x 30 ms
    assert table["muon"]["time_ratio_vs_adamw"] == pytest.approx(1.5)            # fewer steps, yet slower
    assert table["msgd"]["steps_to_adamw_final"] is None and table["msgd"]["time_to_adamw_final_s"] is None
    assert [r["optimizer"] for r in lm_compare.build_table([adamw, muon, slow])] == ["muon", "adamw", "msgd"]
    s = settings_of(device="cpu", jobs=2)
    md = lm_compare.markdown_table(lm_compare.build_table([adamw, muon, slow]), s, None)
    assert "| Muon | 0.02 | 1 | 1.6000 | 50 (0.50x) | 1.5 s (1.50x) | 30 |" in md
    assert "| mSGD | 0.3 | 1 | 2.5000 | — | — | 5 |" in md


# ---------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("argv,message", [
    (["--model", "huge"], "--model: unknown model 'huge'"),
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--jobs", "0"], "--jobs must be a positive integer"),
    (["--device", "tpu"], "--device: expected auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:1x"], "--device: expected auto, cpu, cuda or cuda:N"),
])
def test_bad_lm_compare_options_give_one_line_errors(tmp_path, capsys, argv, message):
    from muonlab.cli import main

    assert main(["run", "lm-compare", "--out", str(tmp_path / "o"), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_the_run_command_s_options_reach_lm_compare_by_name():
    """Every lm-compare option of `muonlab run` is a field of Options with the same name, so none is dropped."""
    from muonlab.cli import build_parser

    args = build_parser().parse_args(["run", "lm-compare", "--model", "micro", "--steps", "5", "--device", "cpu",
                                      "--jobs", "3", "--compile", "--seed", "2", "--quick", "--optimizers", "muon"])
    options = lm_compare.Options.from_namespace(args)
    assert (options.model, options.steps, options.device, options.jobs, options.compile, options.seed, options.quick,
            options.optimizers) == ("micro", 5, "cpu", 3, True, 2, True, "muon")


def test_cuda_device_without_cuda_is_refused(capsys, tmp_path, monkeypatch):
    import torch

    from muonlab.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU

    assert main(["run", "lm-compare", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_lm_compare_options_are_refused_for_other_experiments(tmp_path, capsys):
    from muonlab.cli import main

    assert main(["run", "matfac", "--jobs", "2", "--out", str(tmp_path / "o")]) == 2
    assert "--jobs: only for lm-compare" in capsys.readouterr().err


def test_a_killed_sweep_resumes_and_reuses_finished_runs(tmp_path, monkeypatch):
    """Real micro runs: a sweep killed mid-run resumes that run from its checkpoint (same curve as an unbroken
    run), and the same command once more trains nothing (every run's summary is reused)."""
    import os
    import signal

    from muonlab.tasks.lm import train as train_mod

    from .conftest import write_corpus

    corpus = write_corpus(tmp_path / "corpus")

    def args(name):
        return argparse.Namespace(quick=True, steps=10, optimizers="adamw,muon", data=str(corpus), device="cpu",
                                  jobs=1, seed=0, progress=False, out=str(tmp_path / name),
                                  runs_dir=str(tmp_path / name / "runs"))

    unbroken = lm_compare.run(args("unbroken"))
    assert all(r["wall_s"] > 0 and r["train_time_s"] > 0 and not r["resumed"] for r in unbroken["runs"])
    assert sorted(p.name for p in (tmp_path / "unbroken" / "runs" / "adamw_lr0.003").iterdir()) == ["summary.json"]

    real_train = train_mod.train

    def ctrl_c_at_step_5(cfg):
        return real_train(cfg, on_step=lambda step, loss: step == 5 and os.kill(os.getpid(), signal.SIGINT))

    monkeypatch.setattr(train_mod, "train", ctrl_c_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        lm_compare.run(args("killed"))
    assert (tmp_path / "killed" / "runs" / "adamw_lr0.003" / "checkpoint.pt").exists()
    monkeypatch.setattr(train_mod, "train", real_train)
    resumed = lm_compare.run(args("killed"))
    by_opt = {r["optimizer"]: r for r in resumed["runs"]}
    assert by_opt["adamw"]["resumed"] and not by_opt["muon"]["resumed"]
    for r, u in zip(resumed["runs"], unbroken["runs"]):
        assert r["val_losses"] == u["val_losses"]

    calls = []
    monkeypatch.setattr(train_mod, "train", lambda cfg: calls.append(cfg) or real_train(cfg))
    again = lm_compare.run(args("killed"))
    assert calls == [] and all(r["reused"] for r in again["runs"])
    assert [r["final_val_loss"] for r in again["table"]] == [r["final_val_loss"] for r in resumed["table"]]


def test_report_sections_turn_payloads_into_claims():
    from muonlab.experiments.lm_report import LM_COMPARE_SECTION, QK_CLIP_SECTION

    table = [{"optimizer": "muon", "final_val_loss": 1.3, "step_ratio_vs_adamw": 0.5},
             {"optimizer": "adamw", "final_val_loss": 1.6, "step_ratio_vs_adamw": 1.0},
             {"optimizer": "adam", "final_val_loss": 1.5, "rank_ours_among_D": 1, "rank_work_D": 2},
             {"optimizer": "msgd", "final_val_loss": 2.0, "rank_ours_among_D": 2, "rank_work_D": 8}]
    payload = {"table": table, "spearman_rank_vs_work_D": 1.0,
               "settings": {"model": "micro", "steps": 40, "lr_grid": [1.0]}}
    res = LM_COMPARE_SECTION.summarize({"lm-compare": payload}, True)
    assert [c.holds for c in res.claims] == ["yes", "yes", "yes"]
    rows = {"mha": {"tau": 3.0, "peak_logit_no_clip": 6.0, "peak_logit_clip": 3.5, "clip_holds_every_step": False,
                    "final_val_loss_no_clip": 2.0, "final_val_loss_clip": 2.5}}
    res = QK_CLIP_SECTION.summarize({"qk-clip": {"results": rows}}, True)
    assert [c.holds for c in res.claims] == ["no", "partly"]


def test_report_uses_the_committed_sweep_when_there_is_one(tmp_path, monkeypatch):
    from muonlab.experiments import lm_report

    adamw = fake_run("adamw", 3e-3, 2.0, sec_per_step=0.010, curve=[2.6, 2.4, 2.2, 2.0])
    muon = fake_run("muon", 2e-2, 1.6, sec_per_step=0.025, curve=[2.4, 2.0, 1.8, 1.6])
    s = settings_of(model="tiny", steps=100, device="cpu", jobs=2)
    table = lm_compare.build_table([adamw, muon])
    root = tmp_path / "benchmarks"
    for name, tab in (("small_sweep", table[:1]), ("big_sweep", table)):
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps(
            {"experiment": "lm-compare", "settings": s.to_dict(), "table": tab, "command": lm_compare.command(s, ["adamw", "muon"])}))
    (root / "big_sweep" / "curves.png").write_bytes(b"png")
    assert lm_compare.committed_results(root) == root / "big_sweep"     # the one with more optimizers
    assert lm_compare.committed_results(tmp_path / "none") is None
    monkeypatch.setattr(lm_report, "COMMITTED_SWEEPS", root)
    assert lm_report._lm_settings(True) == {"lm-compare": {"from_results": str(root / "big_sweep")}}
    out = tmp_path / "report" / "lm-compare"
    payload = lm_compare.run(argparse.Namespace(out=str(out), from_results=str(root / "big_sweep")))
    assert (out / "curves.png").read_bytes() == b"png"
    res = lm_report.LM_COMPARE_SECTION.summarize({"lm-compare": payload}, True)
    assert [c.holds for c in res.claims] == ["yes", "no"]   # half the steps, but 2.5x the step time: 1.25x the time
    assert "Committed results (big_sweep" in res.notes and "--model tiny --steps 100 --device cpu" in res.notes
    assert "on cpu" in res.notes and "quick" not in res.claims[0].ours


def test_table_prefers_the_interleaved_step_costs(tmp_path):
    adamw = fake_run("adamw", 3e-3, 2.0, sec_per_step=0.050, curve=[2.6, 2.4, 2.2, 2.0])   # ran under heavy load
    muon = fake_run("muon", 2e-2, 1.6, sec_per_step=0.010, curve=[2.4, 2.0, 1.8, 1.6])
    table = {r["optimizer"]: r for r in lm_compare.build_table([adamw, muon], step_cost={"adamw": 0.01, "muon": 0.02})}
    assert table["muon"]["s_per_step"] == 0.02 and table["muon"]["s_per_step_run"] == 0.01
    assert table["muon"]["time_ratio_vs_adamw"] == pytest.approx(50 * 0.02 / (100 * 0.01))


def test_step_costs_are_measured_for_every_optimizer(tmp_path):
    from muonlab.tasks.lm.data import prepare_data

    from .conftest import write_corpus

    data = prepare_data(str(write_corpus(tmp_path / "corpus")), "byte", verbose=False)
    s = settings_of(quick=True, device="cpu", data=str(tmp_path / "corpus"))
    costs = lm_compare.measure_step_costs(["adamw", "muon"], s, data, steps=2, warmup=1)
    assert set(costs) == {"adamw", "muon"} and all(0 < c < 10 for c in costs.values())


def test_variant_rows_train_their_optimizer_with_their_settings():
    from muonlab.experiments import lm_compare
    from muonlab.tasks.lm.train import DEFAULT_LR, TrainConfig

    assert lm_compare.parse_optimizers("muon_cwd,muon") == ["muon_cwd", "muon"]
    settings = lm_compare.train_settings("muon_cwd")
    assert settings == {"optimizer": "muon", "weight_decay": 0.1, "cautious_wd": True}
    assert lm_compare.train_settings("adamw") == {"optimizer": "adamw"}
    assert lm_compare.default_lr("muon_wd") == DEFAULT_LR["muon"]
    TrainConfig(**settings).validate()  # a valid trainer configuration
