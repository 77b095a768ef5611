"""``muonlab train --compile``: the wiring and the checkpoint keys, without paying for inductor on CPU (a real
compile of even the micro model takes minutes on a busy 2-core machine; BENCHMARKS.md has the measured runs)."""

import os
import signal

import torch

from muonlab.tasks.lm import train as train_mod
from muonlab.tasks.lm.model import GPT, preset_config
from muonlab.tasks.lm.train import COMPILED_PREFIX, train, uncompiled_state_dict

from .conftest import write_corpus
from .test_train import cfg_for


def test_compiled_wrapper_keys_are_stripped_and_in_place_compile_keeps_them():
    model = GPT(preset_config("micro", vocab_size=32))
    plain = model.state_dict()
    wrapped = torch.compile(model).state_dict()          # lazy: nothing is compiled until the first call
    assert all(k.startswith(COMPILED_PREFIX) for k in wrapped)
    stripped = uncompiled_state_dict(wrapped)
    assert list(stripped) == list(plain) and all(torch.equal(stripped[k], plain[k]) for k in plain)
    assert uncompiled_state_dict(plain) is plain          # plain keys pass through
    model.compile()
    assert list(model.state_dict()) == list(plain)        # in place: the keys a checkpoint holds stay plain


def test_compile_flag_compiles_the_training_module_and_checkpoints_stay_plain(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus")
    compiled = []
    monkeypatch.setattr(train_mod, "compile_for_training", lambda module: compiled.append(type(module).__name__))
    res = train(cfg_for(tmp_path, corpus, steps=2, compile=True))
    assert compiled == ["GPT"] and res["tokens_per_s_steady"] > 0
    keys = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert not any(k.startswith(COMPILED_PREFIX) for k in keys)
    train(cfg_for(tmp_path, corpus, steps=2, out=str(tmp_path / "plain")))
    assert compiled == ["GPT"]                            # off by default


def test_a_checkpoint_with_compiled_keys_resumes_exactly(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    full = train(cfg_for(tmp_path, corpus, out=str(tmp_path / "full")))
    part = train(cfg_for(tmp_path, corpus), on_step=lambda s, _: s == 3 and os.kill(os.getpid(), signal.SIGINT))
    assert part["interrupted"] and part["steps_done"] == 3
    path = tmp_path / "run" / "checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    payload["model"] = {COMPILED_PREFIX + k: v for k, v in payload["model"].items()}   # as torch.compile(model) saves
    torch.save(payload, path)
    # --compile is not part of the trajectory: a run started with it may resume without it (and vice versa)
    resumed = train(cfg_for(tmp_path, corpus, resume=True))
    assert resumed["train_losses"] == full["train_losses"] and resumed["val_losses"] == full["val_losses"]


def test_cli_passes_compile():
    import argparse

    from muonlab.tasks.lm.cli import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert config_from_args(p.parse_args(["--compile"])).compile is True
    assert config_from_args(p.parse_args([])).compile is False
