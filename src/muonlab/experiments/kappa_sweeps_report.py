"""Sections of ``muonlab reproduce`` for work A's κ-sweeps (Ma, Huang, Chi, Chen, arXiv 2601.13474): matrix
factorization and in-context linear regression, run by ``kappa_sweeps.py``.
"""

from __future__ import annotations

from muonlab.experiments.claims import Claim, Section, SectionResult

# ---- helpers on results payloads ----------------------------------------------------------------------------------


def best(payload: dict) -> dict[tuple[str, float | None], dict]:
    return {(r["optimizer"], r["kappa"]): r for r in payload["runs"] if r.get("best")}


def iters_by_kappa(payload: dict, name: str) -> list[tuple[float, int | None]]:
    return sorted((k, r["iters_to_tol"]) for (n, k), r in best(payload).items() if n == name)


def fmt_counts(pairs, budget) -> str:
    return ", ".join(f"κ={k:g}: {'>' + str(budget) if it is None else it}" for k, it in pairs)


def budget(payload: dict, name: str) -> int:
    steps = payload["config"]["steps"]
    return steps[name] if isinstance(steps, dict) else steps


def ratio_last_first(pairs, budget_steps) -> tuple[float, bool]:
    """count(κ_max)/count(κ_min); the bool says it is a lower bound (κ_max never reached the tolerance)."""
    first, last = pairs[0][1], pairs[-1][1]
    if first is None:
        return float("nan"), False
    if last is None:
        return budget_steps / max(first, 1), True
    return last / max(first, 1), False


def lower_bound_text(label: str, kappa: float, budget_steps: int) -> str:
    """Why a '≥ r×' ratio is a lower bound (the run at the largest κ never reached the tolerance)."""
    return (f" ({label} never reached the tolerance at κ = {kappa:g} within its {budget_steps}-step budget, so the "
            f"ratio is only a lower bound: budget / iterations at the smallest κ; the true slow-down is larger)")


def _kappa_pairs(pairs, lo, hi):
    return [p for p in pairs if lo <= p[0] <= hi]


# ---- work A: matrix factorization -------------------------------------------------------------------------------


def _matfac_settings(quick: bool) -> dict:
    return {"matfac": {"quick": quick}}


def _matfac_summary(payloads: dict, quick: bool) -> SectionResult:
    p = payloads["matfac"]
    tol = p["config"]["tolerance"]
    claims = []
    sm = iters_by_kappa(p, "simplified_muon")
    reached = [it for _, it in sm if it is not None]
    if reached and len(reached) == len(sm):
        spread = max(reached) / min(reached)
        claims.append(Claim(
            "Simplified Muon needs a number of iterations independent of the condition number κ.",
            "Work A (abstract): linear convergence with an iteration complexity independent of κ. Target: ≤ 1.5× spread over κ ∈ {10, …, 1e4}.",
            f"iterations to relative error {tol:g}: {fmt_counts(sm, budget(p, 'simplified_muon'))}; spread {spread:.2f}×",
            "yes" if spread <= 1.5 else "no"))
    else:
        claims.append(Claim("Simplified Muon needs a number of iterations independent of κ.", "Work A (abstract).",
                            fmt_counts(sm, budget(p, "simplified_muon")), "no"))
    for name, target, label in (("gd", 30.0, "GD"), ("adam", 2.0, "Adam")):
        pairs = iters_by_kappa(p, name)
        if not pairs:
            continue
        ratio, lower = ratio_last_first(pairs, budget(p, name))
        ours = f"{fmt_counts(pairs, budget(p, name))}; κ={pairs[-1][0]:g} vs κ={pairs[0][0]:g}: {'≥ ' if lower else ''}{ratio:.1f}×"
        if lower:
            ours += lower_bound_text(label, pairs[-1][0], budget(p, name))
        statement = ("Work A: GD slows down with κ (≈ ∝ κ). Target: ≥ 30× from κ = 10 to 1e4." if name == "gd"
                     else "Work A: Adam slows down with κ. Target: ≥ 2× from κ = 10 to 1e4.")
        claims.append(Claim(f"{label}'s iteration count grows with κ.", statement, ours, "yes" if ratio >= target else "no"))
    plots = [f"matfac/{n}" for n in p.get("plots", [])]
    notes = (
        "Set-up (ours, after work A's abstract): A = U diag(σ) Vᵀ, 50×40, rank 5, σ log-spaced over [1/κ, 1]; X, Y small random "
        "(scale 1e-3), float64, loss ½‖XYᵀ − A‖²_F; simplified Muon W ← W − η₀ρᵗ polar(∇f) with the exact (SVD) polar factor; "
        "each optimizer at its best point of a small grid (see results.json `config.grids`). The aligned start "
        "X₀ = U diag(x₀), Y₀ = V diag(x₀) keeps every iterate diagonal in (U, V): simplified Muon then moves every singular "
        "value by the same ±η_t, so the distance to σ_i (≤ 1 for every i) and the per-step contraction are both κ-free; "
        "GD moves direction i at rate ≈ ησ_i, so its slowest direction needs ≈ κ/η iterations "
        "(`singular_trajectories.png`: relative error of each product x_i y_i).")
    return SectionResult(claims, plots, notes)


# ---- work A: in-context linear regression ----------------------------------------------------------------------


def _icl_settings(quick: bool) -> dict:
    return {"icl": {"quick": quick}}


def _icl_summary(payloads: dict, quick: bool) -> SectionResult:
    p = payloads["icl"]
    claims = []
    sm = iters_by_kappa(p, "simplified_muon")
    mid = _kappa_pairs(sm, 10.0, 1e3)
    if len(mid) >= 2 and all(it is not None for _, it in mid):
        ratio = mid[-1][1] / mid[0][1]
        claims.append(Claim(
            "Simplified Muon's iteration count grows at most like log κ on ICL (κ-free per-direction contraction).",
            "Work A (abstract): κ-independent convergence for ICL of linear transformers. Target: ≤ 3× from κ = 10 to 1e3.",
            f"iterations to relative excess loss {p['config']['tolerance']:g}: {fmt_counts(sm, budget(p, 'simplified_muon'))}; "
            f"κ = 1e3 vs 10: {ratio:.2f}×", "yes" if ratio <= 3.0 else "no"))
    else:
        claims.append(Claim("Simplified Muon's iteration count grows at most like log κ on ICL.", "Work A (abstract).",
                            fmt_counts(sm, budget(p, "simplified_muon")), "no"))
    for name, target, label in (("gd", 30.0, "GD"), ("adam", 2.0, "Adam")):
        pairs = _kappa_pairs(iters_by_kappa(p, name), 10.0, 1e3)
        if not pairs:
            continue
        ratio, lower = ratio_last_first(pairs, budget(p, name))
        never = pairs[-1][1] is None and pairs[0][1] is not None
        ours = f"{fmt_counts(iters_by_kappa(p, name), budget(p, name))}; κ = 1e3 vs 10: {'≥ ' if lower else ''}{ratio:.1f}×"
        if never:
            ours += (f" ({label} never reached the tolerance at κ = {pairs[-1][0]:g} within its {budget(p, name)}-step "
                     f"budget: the ratio is only a lower bound, and never reaching it is what the target allows — "
                     f"'holds' does not rest on the {ratio:.1f}×)")
        elif lower:
            ours += lower_bound_text(label, pairs[-1][0], budget(p, name))
        at_one = dict(iters_by_kappa(p, name)).get(1.0)
        if name == "adam" and at_one is not None and at_one <= 2:
            ours += (f" (κ = 1 takes {at_one}: there Σ = I and Γ* = I, and Adam's first step is lr·sign(∇L) = lr·I — "
                     "exactly Γ* at lr 1, which the grid contains; κ = 1 is left out of the ratio)")
        statement = ("Work A: GD slows down with κ. Target: ≥ 30× from κ = 10 to 1e3, or never reaches the tolerance."
                     if name == "gd" else "Work A: Adam slows down with κ. Target: ≥ 2× from κ = 10 to 1e3, or never "
                     "reaches the tolerance.")
        claims.append(Claim(f"{label}'s iteration count grows with κ(Σ).", statement, ours,
                            "yes" if (ratio >= target or never) else "no"))
    dist = p["config"].get("initial_distance", {})
    rows = "\n".join(f"| {float(k):g} | {v:.4g} | {dict(sm).get(float(k), '—') or '> budget'} |" for k, v in dist.items())
    notes = (
        "Set-up (ours): x ~ N(0, Σ) in d = 10 with eigenvalues log-spaced over [1/κ, 1], w ~ N(0, I), infinite context "
        "(population loss, closed form), reduced parameterization ŷ = x_qᵀΓh, Γ₀ = 0, Γ* = Σ⁻¹. In Σ's eigenbasis every "
        "iterate stays diagonal and each coordinate g_i follows its own sequence g_i ← g_i − η_t sign(λ_i(g_iλ_i − 1)).\n\n"
        "**What is κ-free and what is not.** The per-direction contraction is κ-free: every coordinate moves by exactly η_t per "
        "step, whatever λ_i, so once a coordinate has reached its target its error shrinks by the same factor ρ per step in "
        "every direction. The initial distance is not: ‖Γ₀ − Γ*‖₂ = 1/λ_min = κ, so the schedule must first travel κ "
        "(η₀/(1 − ρ) ≥ κ), which costs ≈ log(κ)/log(1/ρ) extra steps — hence growth like log κ, not like κ. GD's rate in "
        "direction i is ηλ_i³ (Hessian eigenvalues λ_i·λ_i²), so it degrades polynomially in κ.\n\n"
        "| κ(Σ) | initial distance ‖Γ*‖₂ | simplified Muon iterations |\n|---|---|---|\n" + rows + "\n\n"
        "Numerical caveat (measured): the decoupling is exact only in exact arithmetic. The gradient component of direction i "
        "is ∝ λ_i²|g_iλ_i − 1|, so its entries span ≈ κ² or more; once the weak directions' components fall below float64 "
        "roundoff relative to the strong ones, polar(∇L) mixes directions, and runs with an oversized η₀ at κ ≥ 100 stall "
        "near 1e-3–1e-6 while the scalar recursion converges (the tuned grid avoids them; results.json keeps every run).")
    return SectionResult(claims, [f"icl/{n}" for n in p.get("plots", [])], notes)


MATFAC_SECTION = Section("matfac", "Work A — matrix factorization κ-sweep", ["matfac"], _matfac_settings, _matfac_summary,
                         "Ma, Huang, Chi, Chen, arXiv 2601.13474")
ICL_SECTION = Section("icl", "Work A — in-context linear regression κ-sweep", ["icl"], _icl_settings, _icl_summary,
                      "Ma, Huang, Chi, Chen, arXiv 2601.13474")
