import json
import os
import signal

import pytest
import torch

from muonlab.cli import main as cli_main
from muonlab.tasks.lm.data import DataError
from muonlab.tasks.lm.train import TrainConfig, TrainError, lr_multiplier, train

from .conftest import write_corpus


def cfg_for(tmp_path, corpus, **kw):
    base = dict(data=str(corpus), model="micro", block_size=32, batch_size=4, steps=6, eval_every=2, eval_batches=2,
                ckpt_every=100, out=str(tmp_path / "run"), progress=False, seed=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("optimizer,attention,qk_clip", [("muon", "mla", 5.0), ("adamw", "gqa", None)])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, optimizer, attention, qk_clip):
    corpus = write_corpus(tmp_path / "corpus")
    kw = dict(optimizer=optimizer, attention=attention, qk_clip=qk_clip)
    full = train(cfg_for(tmp_path, corpus, out=str(tmp_path / "full"), **kw))
    assert not full["interrupted"] and len(full["train_losses"]) == 6

    def ctrl_c_at_3(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)   # the real Ctrl-C path: finish the step, checkpoint, stop

    part = train(cfg_for(tmp_path, corpus, **kw), on_step=ctrl_c_at_3)
    assert part["interrupted"] and part["steps_done"] == 3
    out = tmp_path / "run"
    assert (out / "checkpoint.pt").exists() and not list(out.glob("*.tmp"))
    resumed = train(cfg_for(tmp_path, corpus, resume=True, **kw))
    assert resumed["train_losses"] == full["train_losses"]            # bitwise equal curves
    assert resumed["val_losses"] == full["val_losses"] and resumed["val_steps"] == [0, 2, 4, 6]
    assert resumed["max_attn_logit_after_step"] == full["max_attn_logit_after_step"]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("state_dtype", ["int8", "bfloat16"])
def test_low_precision_run_resumes_exactly_and_reports_its_steps(tmp_path, state_dtype):
    """bf16 parameters with stochastic rounding and bf16/int8 optimizer state: a run stopped at step 3 and resumed
    equals the uninterrupted one bit for bit; results.json has the optimizer's telemetry and telemetry.png."""
    corpus = write_corpus(tmp_path / "corpus")
    kw = dict(optimizer="muon", state_dtype=state_dtype, param_dtype="bfloat16", param_rounding="stochastic",
              record_logits=False)
    full = train(cfg_for(tmp_path, corpus, out=str(tmp_path / "full"), **kw))

    def ctrl_c_at_3(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    train(cfg_for(tmp_path, corpus, **kw), on_step=ctrl_c_at_3)
    resumed = train(cfg_for(tmp_path, corpus, resume=True, **kw))
    assert resumed["train_losses"] == full["train_losses"] and resumed["val_losses"] == full["val_losses"]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert all(v.dtype == torch.bfloat16 and torch.equal(a[k], v) for k, v in b.items() if v.is_floating_point())
    telemetry = json.loads((tmp_path / "run" / "results.json").read_text())["telemetry"]
    assert telemetry["steps"] == list(range(1, 7)) and telemetry["skipped_steps"] == [0] * 6
    assert telemetry == full["telemetry"]
    matrix = next(k for k in telemetry["update_rms"] if k.endswith(":matrix"))
    assert all(v > 0 for v in telemetry["update_rms"][matrix])
    assert all(v >= 0 for v in telemetry["orthogonality_error"][matrix])
    assert "telemetry.png" in resumed["files"] and (tmp_path / "run" / "telemetry.png").exists()


@pytest.mark.parametrize("kw,message", [
    (dict(state_dtype="fp7"), "--state-dtype must be one of"),
    (dict(optimizer="adamw", state_dtype="int8"), "apply to the spectral optimizers"),
    (dict(param_rounding="stochastic"), "needs --param-dtype bf16"),
    (dict(param_dtype="float16"), "--param-dtype must be one of"),
])
def test_bad_precision_settings_are_refused(tmp_path, kw, message):
    with pytest.raises(TrainError, match=message):
        cfg_for(tmp_path, tmp_path, **{"optimizer": "muon", **kw}).validate()


def test_results_file_and_training_reduces_the_loss(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    res = train(cfg_for(tmp_path, corpus, steps=20, eval_every=10, optimizer="adamw", qk_clip=50.0))
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    for key in ("final_val_loss", "train_losses", "train_steps", "val_losses", "val_steps", "tokens_per_s",
                "max_attn_logit_after_step"):
        assert key in data
    assert data["val_steps"] == [0, 10, 20] and len(data["max_attn_logit_after_step"]) == 20
    assert data["parallel"] == {"strategy": "none", "world_size": 1}   # the data-parallel strategy, by that name
    assert max(data["max_attn_logit_after_step"]) <= 50.0 * (1 + 1e-5)
    assert res["val_losses"][0] == pytest.approx(5.55, abs=0.3)   # the initial model: about log(257)
    assert res["final_val_loss"] < res["val_losses"][1] < 5.55  # below log(257) and still falling
    assert (tmp_path / "run" / "loss.png").exists() and (tmp_path / "run" / "max_logit.png").exists()


def test_checkpoint_from_a_different_config_is_refused(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    train(cfg_for(tmp_path, corpus, steps=2))
    with pytest.raises(TrainError, match="different configuration.*lr"):
        train(cfg_for(tmp_path, corpus, steps=4, lr=0.5, resume=True))
    with pytest.raises(TrainError, match="--resume"):
        train(cfg_for(tmp_path, corpus, steps=2))                   # would overwrite
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(TrainError, match="cannot read checkpoint"):
        train(cfg_for(tmp_path, corpus, steps=2, resume=True))


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", n_docs=2, words=20)
    with pytest.raises(DataError, match="too small"):
        train(cfg_for(tmp_path, corpus, batch_size=64, block_size=64))
    with pytest.raises(TrainError, match="unknown optimizer"):
        train(cfg_for(tmp_path, corpus, optimizer="lion"))
    with pytest.raises(TrainError, match="unknown model"):
        train(cfg_for(tmp_path, corpus, model="huge"))
    assert cli_main(["train", "--data", str(tmp_path / "missing"), "--no-progress", "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["train", "--optimizer", "lion", "--no-progress"]) == 2
    assert "unknown optimizer" in capsys.readouterr().err


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_multiplier(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from muonlab.tasks.lm import train as train_mod

    path = tmp_path / "ckpt" / "checkpoint.pt"
    train_mod.save_checkpoint(path, {"step": 1})
    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkp")      # a partial write, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        train_mod.save_checkpoint(path, {"step": 2})
    monkeypatch.setattr(train_mod.torch, "save", real_save)
    assert torch.load(path, weights_only=True) == {"step": 1}


@pytest.mark.gpu
def test_cuda_bf16_training_with_qk_clip(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    res = train(cfg_for(tmp_path, corpus, device="cuda", optimizer="muon", attention="mla", qk_clip=5.0, steps=8))
    assert all(torch.isfinite(torch.tensor(res["train_losses"])))
    assert max(res["max_attn_logit_after_step"]) <= 5.0 * (1 + 1e-2)   # bf16 rounding of the re-measured logits


def test_an_unwritable_out_fails_before_training_in_one_line(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", n_docs=2, words=20)
    (tmp_path / "file").write_text("x")
    for bad in ("/proc/muonlab_x", str(tmp_path / "file"), str(tmp_path / "file" / "sub")):
        steps = []
        with pytest.raises(TrainError, match="--out"):
            train(cfg_for(tmp_path, corpus, out=bad), on_step=lambda s, loss: steps.append(s))
        assert steps == []                                          # no step ran
    assert cli_main(["train", "--steps", "5", "--out", "/proc/muonlab_x", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/proc/muonlab_x" in err


def test_resume_may_lengthen_a_finished_run_and_says_how_the_lr_continues(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    first = train(cfg_for(tmp_path, corpus, steps=4, optimizer="muon"))
    assert first["files"] == ["results.json", "loss.png", "max_logit.png", "telemetry.png", "checkpoint.pt"]
    assert all((tmp_path / "run" / f).exists() for f in first["files"])
    capsys.readouterr()
    longer = train(cfg_for(tmp_path, corpus, steps=8, optimizer="muon", resume=True))
    log = capsys.readouterr().out
    assert "resuming at step 4 with --steps 8" in log and "recomputed for 8 steps" in log
    assert longer["steps_done"] == 8 and longer["train_losses"][:4] == first["train_losses"]
    assert longer["val_steps"][-1] == 8
    with pytest.raises(TrainError, match="below the checkpoint's step 8"):
        train(cfg_for(tmp_path, corpus, steps=6, optimizer="muon", resume=True))
    with pytest.raises(TrainError, match="different configuration.*batch_size"):   # still refused
        train(cfg_for(tmp_path, corpus, steps=10, batch_size=2, optimizer="muon", resume=True))


def test_short_runs_evaluate_often_enough_for_a_curve(tmp_path):
    from muonlab.tasks.lm.train import auto_eval_every

    assert [auto_eval_every(s) for s in (1, 5, 30, 500, 5000)] == [1, 1, 3, 50, 50]
    corpus = write_corpus(tmp_path / "corpus")
    res = train(cfg_for(tmp_path, corpus, steps=10, eval_every=None, record_logits=False))
    assert res["val_steps"] == list(range(0, 11))
    assert res["files"] == ["results.json", "loss.png", "checkpoint.pt"]


def test_every_train_option_says_what_it_does_and_its_default():
    import argparse

    from muonlab.tasks.lm.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 25
    missing = [a.option_strings[0] for a in options if not a.help or "default" not in a.help]
    assert missing == []
    text = parser.format_help()          # %-formatting of every help string works
    assert "(default: 500)" in text and "(default: runs/lm)" in text


def test_the_train_options_are_the_config_fields():
    """The parser is built from TrainConfig: each field with an option is one flag, its default is the field's, and
    the parsed flags give back the config (negated switches included)."""
    import argparse
    import dataclasses

    from muonlab.tasks.lm.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert dests <= fields and fields - dests == {"min_lr_ratio"}
    assert config_from_args(parser.parse_args([])) == TrainConfig()
    cfg = config_from_args(parser.parse_args(["--untied", "--no-record-logits", "--no-progress", "--qk-norm",
                                              "--lr", "0.01", "--n-kv-head", "2", "--parallel", "ddp"]))
    assert (cfg.tie_embeddings, cfg.record_logits, cfg.progress, cfg.qk_norm) == (False, False, False, True)
    assert (cfg.lr, cfg.n_kv_head, cfg.parallel) == (0.01, 2, "ddp")
    with pytest.raises(SystemExit):
        parser.parse_args(["--attention", "xyz"])


def test_a_new_option_is_one_field():
    """A field declared with option() is a flag with its type, choices and aliases, and nothing else to edit."""
    import argparse
    from dataclasses import dataclass

    from muonlab.tasks.lm.cli import add_arguments, config_from_args
    from muonlab.tasks.lm.config import option

    @dataclass
    class Config:
        state_dtype: str = option("float32", "state storage (default: %(default)s)", group="g",
                                  choices=("float32", "bfloat16"), aliases={"bf16": "bfloat16"})
        width: int | None = option(None, "a width (default: none)", group="g")
        hidden: float = 0.5

    parser = argparse.ArgumentParser()
    add_arguments(parser, Config)
    assert config_from_args(parser.parse_args([]), Config) == Config()
    assert config_from_args(parser.parse_args(["--state-dtype", "bf16", "--width", "3"]), Config) == Config(
        state_dtype="bfloat16", width=3)
    with pytest.raises(SystemExit):
        parser.parse_args(["--state-dtype", "int4"])


def test_cautious_wd_reaches_the_spectral_groups_and_is_refused_for_torch_optimizers():
    from muonlab.tasks.lm.train import build_model, build_optimizer

    cfg = TrainConfig(model="micro", optimizer="muon", weight_decay=0.1, cautious_wd=True).validate()
    opt = build_optimizer(cfg, build_model(cfg, 256))
    spectral = [g for g in opt.param_groups if g["rule"] == "spectral"]
    assert spectral and all(g["cautious_wd"] and g["weight_decay"] == 0.1 for g in spectral)
    plain = build_optimizer(TrainConfig(model="micro", optimizer="muon").validate(), build_model(cfg, 256))
    assert not any(g.get("cautious_wd") for g in plain.param_groups)
    with pytest.raises(TrainError, match="--cautious-wd applies to the spectral optimizers"):
        TrainConfig(optimizer="adamw", cautious_wd=True).validate()
