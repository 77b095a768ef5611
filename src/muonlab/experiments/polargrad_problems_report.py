"""Sections of ``muonlab reproduce`` for work B's matrix problems (PolarGrad, Lau, Long, Su, arXiv 2505.21799):
quadratic regression, logistic regression and low-rank matrix completion, run by ``polargrad_problems.py``.
"""

from __future__ import annotations

from muonlab.experiments.claims import Claim, Section, SectionResult


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
            "Work B: PolarGrad (lr 15 in the authors' script; 50 is their alternating-GD baseline's) converges fastest; Muon (lr 0.25), Adam (lr 0.05); 1000 steps.",
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


QUADREG_SECTION = Section("quadreg", "Work B — matrix quadratic regression", ["quadreg"], _quadreg_settings,
                          _quadreg_summary, "Lau, Long, Su, arXiv 2505.21799")
LOGREG_SECTION = Section("logreg", "Work B — matrix logistic regression", ["logreg"], _logreg_settings,
                         _logreg_summary, "Lau, Long, Su, arXiv 2505.21799")
COMPLETION_SECTION = Section("completion", "Work B — low-rank matrix completion", ["completion"], _completion_settings,
                             _completion_summary, "Lau, Long, Su, arXiv 2505.21799")
