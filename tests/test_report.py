"""The reproduce report as a stranger reads it: works named first, a tally, rows that explain their own numbers,
stage lines, no leftover checkpoints, ordinary folder permissions."""

from __future__ import annotations

import os
import stat

from muonlab.experiments.kappa_sweeps_report import ICL_SECTION
from muonlab.experiments.polargrad_problems_report import QUADREG_SECTION
from muonlab.experiments.report import Claim, Section, SectionResult, _drop_checkpoints, _stage_line, render, tally


def _run(optimizer, kappa, iters, best=True, **kw):
    return {"optimizer": optimizer, "kappa": kappa, "iters_to_tol": iters, "best": best, **kw}


def test_render_names_the_works_before_the_first_table_and_opens_with_a_tally():
    sec_a = Section("matfac", "Work A — matrix factorization κ-sweep", ["matfac"], dict, None, "")
    sec_d = Section("lm-compare", "Work D — spectral optimizers on a small GPT", ["lm-compare"], dict, None, "")
    results = [(sec_a, SectionResult([Claim("c1", "s", "o", "yes"), Claim("c2", "s", "o", "no")], []), 1.0),
               (sec_d, SectionResult([Claim("c3", "s", "o", "partly")], []), 2.0)]
    assert tally(results) == {"yes": 1, "partly": 1, "no": 1}
    text = render(results, quick=True, seed=0)
    first_table = text.index("| section |")
    assert text.index("3 claims checked: 1 hold, 1 partly, 1 do not") < first_table
    for needle in ("**Work A**", "arxiv.org/abs/2601.13474", "Ma, Huang, Chi, Chen",
                   "**Work D**", "arxiv.org/abs/2602.04669", "Qi, Chen, Ye, He, Xiao"):
        assert text.index(needle) < first_table
    assert "**Work B**" not in text  # only the works the sections check


def test_icl_rows_explain_a_lower_bound_and_adams_one_step_at_kappa_one():
    runs = [_run("simplified_muon", k, it) for k, it in ((1.0, 30), (10.0, 60), (100.0, 80), (1e3, 100))]
    runs += [_run("gd", 1.0, 10), _run("gd", 10.0, 2600), _run("gd", 100.0, None), _run("gd", 1e3, None)]
    runs += [_run("adam", 1.0, 1), _run("adam", 10.0, 300), _run("adam", 100.0, None), _run("adam", 1e3, None)]
    payload = {"runs": runs, "plots": [], "config": {"tolerance": 1e-6, "steps": {"simplified_muon": 1000, "gd": 10000,
                                                                                  "adam": 3000}}}
    res = ICL_SECTION.summarize({"icl": payload}, True)
    gd = next(c for c in res.claims if c.claim.startswith("GD"))
    adam = next(c for c in res.claims if c.claim.startswith("Adam"))
    assert gd.holds == "yes" and "≥ 3.8×" in gd.ours
    assert "never reached the tolerance at κ = 1000 within its 10000-step budget" in gd.ours
    assert "κ = 1 takes 1" in adam.ours and "sign" in adam.ours
    assert "κ = 1 takes" not in gd.ours


def test_quadreg_rows_use_the_relative_gap_of_the_plot():
    def run(name, lr, errors, best=True):
        return {"optimizer": name, "lr": lr, "best": best, "errors": errors, "final_error": errors[-1],
                "final_loss": 1e6 * errors[-1], "losses": [1e6 * e for e in errors], "diverged": False}

    payload = {"runs": [run("polargrad", 1e-6, [1.0, 1e-3, 1e-4]), run("muon", 0.03, [1.0, 1e-2, 2e-2]),
                        run("adam", 0.02, [1.0, 1e-6, 1e-3])],
               "plots": [], "config": {"f_star": 5.0, "steps": 4000, "small": True}}
    claim = QUADREG_SECTION.summarize({"quadreg": payload}, True).claims[0]
    assert claim.holds == "yes"
    assert "(f − f*)/(f(X₀) − f*)" in claim.ours and "polargrad 0.0001 (lr 1e-06)" in claim.ours
    assert "adam 1e-06" in claim.ours and "adam passes below PolarGrad's final level on the way but does not" in claim.ours


def test_stage_lines_count_stages_and_scale_the_estimate_by_the_speed_so_far():
    sec = Section("icl", "Work A — ICL", ["icl"], dict, None, "")
    assert _stage_line(1, 7, sec, True, 0.0, 0.0, 280.0).startswith("[stage 1 of 7] Work A — ICL (icl); about 4.7 min")
    # twice as slow as measured so far: twice the remaining estimate
    assert "about 80 s left (elapsed 40 s)" in _stage_line(2, 7, sec, True, 40.0, 20.0, 40.0)
    assert "left" not in _stage_line(2, 7, sec, False, 40.0, 0.0, None)


def test_checkpoints_are_dropped_and_result_folders_get_ordinary_permissions(tmp_path):
    from muonlab.files import atomic_directory

    run = tmp_path / "lm" / "runs" / "adam_lr0.003"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"x" * 100)
    (run / "results.json").write_text("{}")
    (run / "checkpoint_dcp_step5").mkdir()
    (run / "checkpoint_dcp_step5" / "shard").write_bytes(b"y" * 10)
    assert _drop_checkpoints(tmp_path / "lm") == 110
    assert sorted(p.name for p in run.iterdir()) == ["results.json"]
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
