import argparse

import pytest

from muonlab.experiments import lm_compare, qk_clip
from muonlab.experiments.registry import EXPERIMENTS


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
    assert lm_compare._spearman([1, 2, 3], [1, 2, 3]) == 1.0
    assert lm_compare._spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert lm_compare.parse_optimizers(None) == list(lm_compare.DEFAULT_OPTIMIZERS)
    assert lm_compare.parse_optimizers("Muon, adamw") == ["muon", "adamw"]
    with pytest.raises(ValueError, match="unknown"):
        lm_compare.parse_optimizers("muon,lion")
    # work D's eight are all in the comparison
    assert set(lm_compare.WORK_D) <= set(lm_compare.DEFAULT_OPTIMIZERS)


def test_quick_settings_are_small_and_full_settings_use_the_tiny_model():
    quick = lm_compare.settings(argparse.Namespace(quick=True, steps=None, seed=0, out="x"))
    full = lm_compare.settings(argparse.Namespace(quick=False, steps=None, seed=0, out="x"))
    assert quick["model"] == "micro" and quick["lr_grid"] == (1.0,)
    assert full["model"] == "tiny" and len(full["lr_grid"]) >= 3
    assert qk_clip.settings(argparse.Namespace(quick=True, steps=None, seed=0, out="x"))["optimizer"] == "muon"


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
