import argparse

import pytest

from muonlab.experiments import qk_clip


def test_steps_over_tau_counts_only_excess_beyond_rounding():
    curve = [1.0, 2.0, 2.0001, 2.1, float("nan")]
    assert qk_clip.steps_over(curve, 2.0, 1e-4) == 2      # 2.1 and the non-finite step
    assert qk_clip.steps_over(curve, 2.0, 0.0) == 3
    assert qk_clip.steps_over(curve, 3.0, 1e-4) == 1


def test_settings_take_model_steps_and_device():
    s = qk_clip.settings(argparse.Namespace(quick=True, steps=7, model="tiny", device="cpu", seed=0))
    assert (s["model"], s["steps"], s["device"], s["precision"]) == ("tiny", 7, "cpu", "fp32")
    assert s["block_size"] is None  # the preset's context
    with pytest.raises(ValueError, match="--model"):
        qk_clip.settings(argparse.Namespace(quick=True, model="huge"))


@pytest.mark.parametrize("argv, message", [
    (["--model", "huge"], "--model: unknown model 'huge'"),
    (["--device", "tpu"], "--device: expected auto, cpu, cuda or cuda:N"),
    (["--steps", "0"], "--steps must be a positive integer"),
])
def test_bad_lm_options_are_one_line_errors(argv, message, capsys, tmp_path):
    from muonlab.cli import main

    assert main(["run", "qk-clip", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_cuda_device_is_refused_without_cuda(capsys, tmp_path, monkeypatch):
    import torch

    from muonlab.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU

    assert main(["run", "qk-clip", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_report_section_counts_steps_over_tau():
    from muonlab.experiments.lm_report import QK_CLIP_SECTION

    rows = {"mla": {"tau": 250.0, "tolerance": 0.03, "peak_logit_no_clip": 500.0, "peak_logit_clip": 294.0,
                    "steps_over_tau_clip": 430, "steps_over_tau_no_clip": 900, "steps_clip": 1000,
                    "clip_holds_every_step": False, "final_val_loss_no_clip": 0.952, "final_val_loss_clip": 1.007}}
    res = QK_CLIP_SECTION.summarize({"qk-clip": {"results": rows}}, False)
    assert [c.holds for c in res.claims] == ["no", "partly"]
    assert "430 of 1000 with, 900 without" in res.claims[0].ours


def test_quick_run_on_the_micro_model_holds_the_bound(tmp_path):
    """End to end, tiny budget: both attentions, the clip binds (the free run goes over τ) and holds every step."""
    from .conftest import write_corpus

    data = str(write_corpus(tmp_path / "corpus"))
    payload = qk_clip.run(argparse.Namespace(quick=True, steps=6, model="micro", device="cpu", seed=0,
                                             out=tmp_path / "out", tau=None, data=data))
    for att, r in payload["results"].items():
        assert r["steps_clip"] == 6
        assert r["steps_over_tau_no_clip"] >= 1, att
        assert r["steps_over_tau_clip"] == 0 and r["clip_holds_every_step"], att
    assert "steps > τ, QK-Clip" in (tmp_path / "out" / "table.md").read_text()
