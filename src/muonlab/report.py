"""``muonlab reproduce``: run the reproductions and write ``report.md`` — each claim, the source's statement, ours, and
whether it holds.

The report is a list of *sections*. A section names the experiments it needs (with their settings for the full and the
``--quick`` report) and turns their results.json payloads into claim rows, plots and a short note. Other parts of the
lab add sections by appending "module:attribute" to :data:`SECTIONS` (the attribute is a :class:`Section`).
"""

from __future__ import annotations

import argparse
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class Claim:
    claim: str  # one sentence
    source: str  # the source's number or statement
    ours: str  # our measurement
    holds: str  # "yes", "no", "partly"


@dataclass
class SectionResult:
    claims: list[Claim]
    plots: list[str]  # paths relative to the report directory
    notes: str = ""


@dataclass
class Section:
    name: str
    title: str
    experiments: list[str]
    settings: Callable[[bool], dict[str, dict]]  # quick -> {experiment: argument overrides}
    summarize: Callable[[dict[str, dict], bool], SectionResult]
    source: str = ""


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


# ---- work B: matrix quadratic regression -----------------------------------------------------------------------


def _quadreg_settings(quick: bool) -> dict:
    return {"quadreg": {"small": quick, "steps": 4000}}


def _monotone_fraction(losses: list[float]) -> float:
    if len(losses) < 2:
        return 1.0
    ok = sum(1 for a, b in zip(losses, losses[1:]) if b <= a * (1 + 1e-12))
    return ok / (len(losses) - 1)


def _quadreg_summary(payloads: dict, quick: bool) -> SectionResult:
    p = payloads["quadreg"]
    f_star = p["config"]["f_star"]
    bests = {r["optimizer"]: r for r in p["runs"] if r.get("best")}
    # One unit everywhere (this table, the plot, `muonlab run quadreg`): the relative gap (f − f*)/(f(X₀) − f*).
    gaps = {n: r["final_error"] for n, r in bests.items()}
    gap_text = ", ".join(f"{n} {g:.3g} (lr {bests[n]['lr']:g})" for n, g in gaps.items())
    claims = []
    if {"polargrad", "muon", "adam"} <= set(gaps):
        wins = gaps["polargrad"] < min(gaps["muon"], gaps["adam"])
        dips = [n for n in ("muon", "adam") if bests[n]["errors"] and min(bests[n]["errors"]) < gaps["polargrad"]]
        one = len(dips) == 1
        dip_text = (f" (the verdict compares final gaps: {' and '.join(dips)} pass{'es' if one else ''} below "
                    f"PolarGrad's final level on the way but {'does' if one else 'do'} not stay there — their "
                    "normalized steps do not shrink with the gradient, so at a constant lr they keep moving near the "
                    "optimum)") if dips else ""
        claims.append(Claim(
            "PolarGrad reaches a lower objective than Muon and Adam on matrix quadratic regression.",
            "Work B: PolarGrad (lr 4e-8) converges fastest; Muon (lr 0.1) and Adam (lr 0.05) stall higher after 4000 steps.",
            f"relative gap (f − f*)/(f(X₀) − f*) after {p['config']['steps']} steps: {gap_text}; lowest along the run: "
            + ", ".join(f"{n} {min(r['errors']):.3g}" for n, r in bests.items()) + dip_text, "yes" if wins else "no"))
    if "polargrad" in bests:
        pg = bests["polargrad"]
        frac = _monotone_fraction(pg["losses"])
        err = pg["errors"]
        rate = (err[-1] / err[0]) ** (1.0 / max(len(err) - 1, 1)) if err[0] > 0 and err[-1] > 0 else float("nan")
        claims.append(Claim(
            "With a stable constant step PolarGrad's objective decreases monotonically (linear convergence).",
            "Work B: PolarGrad converges linearly on strongly convex smooth problems with a constant step.",
            f"best PolarGrad run: {100 * frac:.1f}% of recorded steps non-increasing; mean contraction of the gap "
            f"{rate:.5f} per recorded point", "yes" if frac >= 0.999 else "partly"))
    if "muon" in bests:
        muon_runs = sorted((r for r in p["runs"] if r["optimizer"] == "muon" and not r["diverged"]), key=lambda r: r["lr"])
        floors = ", ".join(f"lr {r['lr']:g}: {r['final_error']:.3g}" for r in muon_runs)
        grows = all(a["final_loss"] <= b["final_loss"] for a, b in zip(muon_runs, muon_runs[1:]))
        claims.append(Claim(
            "Muon with a constant lr stalls at a floor that grows with the lr.",
            "Work B: Muon with a constant step does not converge (no nuclear-norm scaling).",
            f"final relative gap by lr: {floors}", "yes" if grows else "partly"))
    cfg = p["config"]
    notes = (
        f"Data as in the authors' script (A, B, C ~ N(0, 1), X₀ ~ U(−1, 1)){', every dimension / 5 (--small)' if cfg.get('small') else ''}; "
        f"Hessian condition number κ(A)²κ(B)² = {cfg.get('hessian_condition', float('nan')):.3g}; f* from X* = A⁺CB⁺ in float64; "
        "the gap f − f* is computed as ½⟨X − X*, ∇f(X)⟩ (no cancellation) and reported relative to the start's, "
        "(f − f*)/(f(X₀) − f*), in the rows above, the plot and `muonlab run quadreg`; the measurements quoted below "
        "are absolute gaps f − f*.\n\n"
        "**Why a quick check can miss PolarGrad's win: the step size.** PolarGrad is steepest descent in the spectral norm; "
        "a constant step is stable only below ≈ 2/⟨U, H[U]⟩ (U = polar(∇f), H[D] = AᵀA D BBᵀ), and its linear rate "
        "improves sharply up to that edge. Measured at full size (500×100, fp32, exact polar, 4000 steps, seed 0): "
        "gap 28 at lr 1e-8, 4e-3 at 2e-8, and 1e-8 (the fp32 floor) at the paper's 4e-8, reached by step ~1000; Muon at "
        "lr 0.1 stalls near 4e5. On the 1/5-size problem (`--small`, stable steps ×125) the edge is just as sharp: "
        "2.5e-6 converges, 5e-6 diverges. A grid that stops below the edge (e.g. 1.3e-8) under-reports PolarGrad by "
        "orders of magnitude; the best step sits within 2× of divergence, so tune it on a fine grid up to the edge.")
    return SectionResult(claims, [f"quadreg/{n}" for n in p.get("plots", [])], notes)


# ---- work B: matrix logistic regression and low-rank matrix completion ------------------------------------------


def _interior_text(payload: dict) -> tuple[str, bool]:
    """Each optimizer's best lr and whether it lies strictly inside its grid (not at an end)."""
    grids = payload["config"]["grids"]
    parts, inside = [], True
    for r in payload["runs"]:
        if not r.get("best"):
            continue
        lrs = sorted({s["lr"] for s in grids[r["optimizer"]]})
        interior = lrs[0] < r["lr"] < lrs[-1]
        inside &= interior
        parts.append(f"{r['optimizer']} {r['lr']:g} ({'inside' if interior else 'at the edge of'} {{{', '.join(f'{x:g}' for x in lrs)}}})")
    return "; ".join(parts), inside


def _size_text(cfg: dict) -> str:
    return (f"{'1/5-size (--small), ' if cfg.get('small') else 'full size, '}{cfg['steps']} steps, "
            f"{'quick grid' if cfg.get('quick') else 'full grid'}, seed {cfg['seed']}")


def _logreg_settings(quick: bool) -> dict:
    return {"logreg": {"small": quick}}


def _tail_mean(run: dict) -> float:
    errs = run["errors"]
    k = max(1, len(errs) // 10)
    return sum(errs[-k:]) / k


def _logreg_summary(payloads: dict, quick: bool) -> SectionResult:
    p = payloads["logreg"]
    cfg = p["config"]
    bests = {r["optimizer"]: r for r in p["runs"] if r.get("best")}
    tails = {n: _tail_mean(r) for n, r in bests.items() if not r["diverged"]}
    claims = []
    if {"polargrad", "muon", "adam"} <= set(tails):
        rival = min(tails["muon"], tails["adam"])
        # within 1% is a tie: the tail mean of mini-batch losses still carries sampling noise
        verdict = "yes" if tails["polargrad"] < 0.99 * rival else ("partly" if tails["polargrad"] <= 1.01 * rival else "no")
        claims.append(Claim(
            "PolarSGD reaches a lower training loss than Muon and Adam on matrix logistic regression.",
            "Work B: PolarSGD (lr 1.5e-7) converges fastest; Muon (lr 0.1), Adam (lr 5e-3); 1500 steps, mini-batches of 1000 rows.",
            f"mean mini-batch loss over the last 10% of steps ({_size_text(cfg)}): "
            + ", ".join(f"{n} {v:.4g} (lr {bests[n]['lr']:g})" for n, v in tails.items())
            + " (within 1% counts as a tie: 'partly')", verdict))
    where, inside = _interior_text(p)
    notes = (
        "Data as in the authors' script (A, B ~ N(0, 1), C = ±1 with P(+1) = 0.31 independent of A, X₀ ~ U(−1, 1)). "
        "C carries no signal, so the loss can only fall to the label entropy (≈ 0.62 nats per entry) plus what a "
        "mini-batch lets X overfit; the comparison is about how fast each optimizer gets there from a start whose "
        "margins are huge (loss ≈ linear in |AXB|). Best run per optimizer = lowest mean mini-batch loss over the last "
        f"10% of steps. Best lrs: {where}{'' if inside else ' — a best lr at the edge of its grid means the grid should be widened'}.\n\n"
        "Measured at full size (seed 0, 1500 steps, ≈ 25 s per run on one core; tail-mean loss, start 2.9e7): PolarGrad "
        "1e-8: 1.59e6, 3e-8: 2.81e5, 6e-8: 2.99e5, 1.5e-7 (the paper's): 4.78e5, 5e-7: 1.53e6; Muon 0.003: 9.39e6, "
        "0.01: 3.06e5, 0.02: 3.44e5, 0.1 (the paper's): 8.40e5; Adam 3e-4: 1.64e7, 1e-3: 2.91e5, 2e-3: 2.85e5, "
        "5e-3 (the paper's): 3.21e5. So PolarGrad is ahead at each optimizer's tuned lr, but only by ≈ 1.4% over Adam; "
        "at the paper's lrs the order is Adam < PolarGrad < Muon. On the 1/5-size quick problem the three end within a "
        "few percent of each other.")
    return SectionResult(claims, [f"logreg/{n}" for n in p.get("plots", [])], notes)


def _completion_settings(quick: bool) -> dict:
    return {"completion": {"small": quick}}


def _completion_summary(payloads: dict, quick: bool) -> SectionResult:
    p = payloads["completion"]
    cfg = p["config"]
    tol = cfg["tolerance"]
    bests = {r["optimizer"]: r for r in p["runs"] if r.get("best")}

    def reached(r):
        return f"{r['iters_to_tol']} steps" if r["iters_to_tol"] is not None else f"not reached (final {r['final_error']:.2g})"

    claims = []
    if {"polargrad", "muon", "adam"} <= set(bests):
        pg = bests["polargrad"]
        others = [bests["muon"], bests["adam"]]
        wins = pg["iters_to_tol"] is not None and all(
            o["iters_to_tol"] is None or pg["iters_to_tol"] < o["iters_to_tol"] for o in others)
        claims.append(Claim(
            "PolarGrad converges fastest on low-rank matrix completion.",
            "Work B: PolarGrad (lr 15 in the authors' script; SPEC lists 50) converges fastest; Muon (lr 0.25), Adam (lr 0.05); 1000 steps.",
            f"steps to f/f(X₀) ≤ {tol:g} at each optimizer's best lr ({_size_text(cfg)}): "
            + ", ".join(f"{n} {reached(r)} (lr {r['lr']:g})" for n, r in bests.items()),
            "yes" if wins else "no"))
    if "muon" in bests:
        muon_runs = sorted((r for r in p["runs"] if r["optimizer"] == "muon" and not r["diverged"]), key=lambda r: r["lr"])
        stalls = all(r["iters_to_tol"] is None for r in muon_runs)
        claims.append(Claim(
            "Muon with a constant lr stalls at a floor instead of converging.",
            "Work B: Muon with a constant step does not converge (no nuclear-norm scaling).",
            "final f/f(X₀) by lr: " + ", ".join(f"lr {r['lr']:g}: {r['final_error']:.2g}" for r in muon_runs),
            "yes" if stalls else "no"))
    diverged = sorted(r["lr"] for r in p["runs"] if r["optimizer"] == "polargrad" and r["diverged"])
    where, inside = _interior_text(p)
    notes = (
        "M = U*V*ᵀ (U* m×5, V* n×5 Gaussian), Ω ~ Bernoulli(0.3), f = ‖P_Ω(XYᵀ − M)‖²_F/|Ω|, X₀, Y₀ ~ U(−1, 1) of rank 5, "
        "PolarSGD with the exact polar factor, fp32. Best run per optimizer = fewest steps to the tolerance (else the "
        f"lowest final error). Best lrs: {where}. PolarGrad lrs that diverged: "
        f"{', '.join(f'{x:g}' for x in diverged) or 'none'}.\n\n"
        "**Why PolarGrad 'did not converge' at lr 50.** 50 is above PolarSGD's stability edge on this problem, not a "
        "numerical fault: at full size (500×250, seed 0, 1000 steps) PolarGrad reaches 1e-6 in 233 steps at lr 5, "
        "108 at 10, 66 at 15, 45 at 20, 29 at 25, 67 at 30, and diverges at 40 and 50 — identically in fp64, with 2-step QDWH "
        "instead of the SVD, and from a 1e-3·N(0, 1) start; rank-10 factors slow it (307 steps at 20) and still "
        "diverge at 50. Only momentum 0.9 makes 50 converge (134 steps). The authors' script runs PolarGrad at 15; "
        "50 is its alternating-GD step. The edge follows the curvature L ≈ 2‖Y‖²_op/(mn) ≈ 2/√(mn), so on the 1/5-size "
        "problem (--small, PolarGrad's lrs ×0.2) the best PolarGrad lr is ≈ 4 and 10 diverges. Full size, seed 0, "
        "1000 steps: Adam's best is ≈ 132 steps (lr 0.2), Muon stalls at ≥ 2.5e-5 (lr 0.01) — PolarGrad is fastest. "
        "On the 1/5-size problem the race is close and depends on how near the edge the PolarGrad grid reaches "
        "(lr 4: 286 steps, 4.5: 165, 5: stalls at 9e-2; Adam lr 0.1: 155)." )
    return SectionResult(claims, [f"completion/{n}" for n in p.get("plots", [])], notes)


MATFAC_SECTION = Section("matfac", "Work A — matrix factorization κ-sweep", ["matfac"], _matfac_settings, _matfac_summary,
                         "Ma, Huang, Chi, Chen, arXiv 2601.13474")
ICL_SECTION = Section("icl", "Work A — in-context linear regression κ-sweep", ["icl"], _icl_settings, _icl_summary,
                      "Ma, Huang, Chi, Chen, arXiv 2601.13474")
QUADREG_SECTION = Section("quadreg", "Work B — matrix quadratic regression", ["quadreg"], _quadreg_settings,
                          _quadreg_summary, "Lau, Long, Su, arXiv 2505.21799")
LOGREG_SECTION = Section("logreg", "Work B — matrix logistic regression", ["logreg"], _logreg_settings,
                         _logreg_summary, "Lau, Long, Su, arXiv 2505.21799")
COMPLETION_SECTION = Section("completion", "Work B — low-rank matrix completion", ["completion"], _completion_settings,
                             _completion_summary, "Lau, Long, Su, arXiv 2505.21799")

# "module:attribute" of every Section in the report, in order; other parts of the lab append theirs.
SECTIONS: list[str] = [
    "muonlab.report:MATFAC_SECTION",
    "muonlab.report:ICL_SECTION",
    "muonlab.report:QUADREG_SECTION",
    "muonlab.report:LOGREG_SECTION",
    "muonlab.report:COMPLETION_SECTION",
    "muonlab.experiments.lm_report:LM_COMPARE_SECTION",
    "muonlab.experiments.lm_report:QK_CLIP_SECTION",
]


def load_sections(names: list[str] | None = None) -> list[Section]:
    out = []
    for ref in names or SECTIONS:
        module, attr = ref.split(":")
        out.append(getattr(importlib.import_module(module), attr))
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# The works the report checks, named by the letter the section titles use ("Work A — ...").
WORKS: dict[str, str] = {
    "A": "*Preconditioning Benefits of Spectral Orthogonalization in Muon* — Ma, Huang, Chi, Chen (2026), "
         "[arXiv 2601.13474](https://arxiv.org/abs/2601.13474). Theory: a simplified Muon (the polar factor of the "
         "gradient, no momentum) converges in a number of iterations independent of the condition number κ.",
    "B": "*PolarGrad: A Class of Matrix-Gradient Optimizers from a Unifying Preconditioning Perspective* — Lau, Long, "
         "Su (2025), [arXiv 2505.21799](https://arxiv.org/abs/2505.21799). PolarGrad = the polar factor scaled by the "
         "gradient's nuclear norm; matrix problems on which it beats Muon and Adam.",
    "C": "The Muon / MuonClip line: Keller Jordan's *Muon* ([blog, 2024](https://kellerjordan.github.io/posts/muon/)); "
         "*Muon is Scalable for LLM Training* — Liu et al., Moonshot AI (2025), "
         "[arXiv 2502.16982](https://arxiv.org/abs/2502.16982); *Kimi K2: Open Agentic Intelligence* — Kimi Team (2025), "
         "[arXiv 2507.20534](https://arxiv.org/abs/2507.20534). QK-Clip rescales a head's query/key weights when its "
         "largest attention logit exceeds τ.",
    "D": "*Delving into Muon and Beyond: Deep Analysis and Extensions* — Qi, Chen, Ye, He, Xiao (ICML 2026), "
         "[arXiv 2602.04669](https://arxiv.org/abs/2602.04669). A family U Σ^p Vᵀ, p ∈ {1, ½, ¼, 0}, applied to momentum "
         "(mSGD…) or to Adam's update (Adam, AdamS, AdamQ, AdamZ; p = 1 is plain Adam, p = 0 is Muon-like), ranked on "
         "GPT-2 124M.",
}
VERDICTS = ("yes", "partly", "no")


def _works_of(sections) -> list[str]:
    letters = []
    for sec, _, _ in sections:
        words = sec.title.split()
        if len(words) >= 2 and words[0] == "Work" and words[1] in WORKS and words[1] not in letters:
            letters.append(words[1])
    return sorted(letters)


def tally(sections) -> dict[str, int]:
    counts = {v: 0 for v in VERDICTS}
    for _, res, _ in sections:
        for c in res.claims:
            counts[c.holds] = counts.get(c.holds, 0) + 1
    return counts


def render(sections: list[tuple[Section, SectionResult, float]], *, quick: bool, seed: int) -> str:
    counts = tally(sections)
    total = sum(counts.values())
    lines = ["# muonlab reproduce — claims of the source works, checked", "",
             f"**{total} claims checked: {counts['yes']} hold, {counts['partly']} partly, {counts['no']} do not**"
             + (" (quick mode: reduced sizes, grids and step budgets; the full run is `muonlab reproduce`)." if quick
                else "."), "",
             f"Generated by `muonlab reproduce{' --quick' if quick else ''} --seed {seed}`.", ""]
    works = _works_of(sections)
    if works:
        lines += ["The works (each section below names its work by letter):", ""]
        lines += [f"- **Work {w}** — {WORKS[w]}" for w in works]
        lines.append("")
    lines += ["Each row: the claim in one sentence, the source's number or statement (with the target we test it "
              "against), our measurement, and whether it holds — **yes**: our number meets the target; **partly**: "
              "the direction holds but not the margin, or a tie; **no**: it does not. Raw results: `*/results.json`.",
              "", "| section | claim | source | ours | holds |", "|---|---|---|---|---|"]
    for sec, res, _ in sections:
        for c in res.claims:
            lines.append(f"| {sec.name} | {_cell(c.claim)} | {_cell(c.source)} | {_cell(c.ours)} | **{c.holds}** |")
    for sec, res, wall in sections:
        lines += ["", f"## {sec.title}", "", f"Source: {sec.source}. Wall time: {wall:.0f} s.", ""]
        for c in res.claims:
            lines.append(f"- **{c.holds}** — {c.claim} Source: {c.source} Ours: {c.ours}")
        if res.notes:
            lines += ["", res.notes]
        lines.append("")
        for plot in res.plots:
            lines.append(f"![{plot}]({plot})")
    return "\n".join(lines) + "\n"


# Seconds per section of `muonlab reproduce --quick`, measured (2 CPU cores shared with other jobs, load ≈ 10,
# torch 2.13): the basis of the stage lines' time estimate. Full mode has no measured total here (lm-compare alone
# takes ≈ 25–50 min, docs/lm.md).
QUICK_SECONDS = {"matfac": 77, "icl": 39, "quadreg": 48, "logreg": 35, "completion": 7, "lm-compare": 54, "qk-clip": 19}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _stage_line(k: int, n: int, sec: Section, quick: bool, elapsed: float, done_typical: float,
                left_typical: float | None) -> str:
    """'[stage k of n] title ...; elapsed ..., about ... left' — the estimate is the measured quick-mode seconds of
    the remaining stages, scaled by how fast this machine has been on the stages done so far."""
    line = f"[stage {k} of {n}] {sec.title} ({', '.join(sec.experiments)})"
    if left_typical is None:
        return line + (f"; elapsed {_duration(elapsed)}" if k > 1 else "")
    speed = elapsed / done_typical if done_typical > 0 else 1.0
    line += f"; about {_duration(left_typical * speed)} left" + (f" (elapsed {_duration(elapsed)})" if k > 1 else "")
    return line


def _drop_checkpoints(folder: Path) -> int:
    """Delete the trainer's checkpoints under ``folder`` (the report reads only results.json); returns bytes freed."""
    import shutil

    freed = 0
    for path in list(folder.rglob("checkpoint.pt")):
        freed += path.stat().st_size
        path.unlink()
    for path in list(folder.rglob("checkpoint_dcp_step*")):
        if path.is_dir():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
    return freed


def reproduce(out: str | Path, *, quick: bool = False, seed: int = 0, progress: bool = True,
              sections: list[str] | None = None, overrides: dict | None = None) -> Path:
    """Run every section's experiments into ``out`` (atomically) and write ``out/report.md``; returns its path.

    Prints one line per stage ("[stage k of N] ...", with a time estimate in quick mode) whatever ``progress`` says;
    ``progress=False`` silences the progress bars. The language-model runs' checkpoints are deleted after each
    stage (they are only needed to resume a run; the report reads results.json). ``overrides`` (tests) updates
    every experiment's arguments, e.g. ``{"steps": 20}``.
    """
    from muonlab.experiments.cli import execute
    from muonlab.experiments.output import atomic_directory

    loaded = load_sections(sections)
    results = []
    n = len(loaded)
    typical = [QUICK_SECONDS.get(sec.name) if quick else None for sec in loaded]
    known = all(t is not None for t in typical)
    t0 = time.perf_counter()
    with atomic_directory(out) as tmp:
        for k, sec in enumerate(loaded, 1):
            elapsed = time.perf_counter() - t0
            left = sum(typical[k - 1:]) if known else None
            print(_stage_line(k, n, sec, quick, elapsed, sum(typical[:k - 1]) if known else 0.0, left), flush=True)
            start = time.perf_counter()
            payloads = {}
            for name, settings in sec.settings(quick).items():
                args = argparse.Namespace(optimizers=None, kappas=None, steps=None, seed=seed, quick=quick, small=False,
                                          progress=progress)
                for key, value in {**settings, **(overrides or {})}.items():
                    setattr(args, key, value)
                sub = tmp / name
                sub.mkdir()
                payloads[name] = execute(name, args, sub)
                _drop_checkpoints(sub)
            results.append((sec, sec.summarize(payloads, quick), time.perf_counter() - start))
        (tmp / "report.md").write_text(render(results, quick=quick, seed=seed))
    return Path(out).resolve() / "report.md"


def claims_hold(result: SectionResult) -> bool:
    return all(c.holds == "yes" for c in result.claims)

