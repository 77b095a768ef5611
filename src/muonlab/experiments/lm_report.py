"""Sections of ``muonlab reproduce`` for the language-model lab (work D's ranking, work C's QK-Clip).

Add to ``muonlab.experiments.report.SECTIONS``: "muonlab.experiments.lm_report:LM_COMPARE_SECTION" and
"muonlab.experiments.lm_report:QK_CLIP_SECTION".
"""

from __future__ import annotations

from pathlib import Path

from muonlab.experiments.claims import Claim, Section, SectionResult

# Where a project keeps its finished lm-compare sweeps, relative to the folder the report runs in (a checkout of
# muonlab has them in benchmarks/lm/); the installed package itself holds none.
COMMITTED_SWEEPS = Path("benchmarks") / "lm"


def _lm_settings(quick: bool) -> dict:
    """The most complete committed sweep under :data:`COMMITTED_SWEEPS` when the folder the report runs in has one
    (a full sweep costs far more than a report should), else a fresh run (quick settings under --quick)."""
    from muonlab.experiments.lm_compare import committed_results

    committed = committed_results(COMMITTED_SWEEPS.resolve())
    if committed is not None:
        return {"lm-compare": {"from_results": str(committed)}}
    return {"lm-compare": {"quick": quick}}


def _fmt_ratio(value) -> str:
    return "never" if value is None else f"{value:.2f}×"


def _lm_summary(payloads: dict, quick: bool) -> SectionResult:
    p = payloads["lm-compare"]
    st = p["settings"]
    table = {r["optimizer"]: r for r in p["table"]}
    replayed = "replayed_from" in p
    fresh_quick = quick and not replayed
    claims = []
    if "muon" in table and "adamw" in table and table["muon"]["final_val_loss"] is not None:
        m, a = table["muon"], table["adamw"]
        ratio = m.get("step_ratio_vs_adamw")
        claims.append(Claim(
            "Tuned Muon reaches tuned AdamW's final validation loss in fewer steps (target ≤ 0.7×).",
            "modded-nanogpt: 3600 vs 5625 steps (0.64×); work D: Muon 2.887 vs Adam 2.871 (no win)",
            f"{_fmt_ratio(ratio)} (Muon {m['final_val_loss']:.3f} vs AdamW "
            f"{a['final_val_loss']:.3f}){'; quick: default lrs, 40 steps' if fresh_quick else ''}",
            "yes" if ratio is not None and ratio <= 0.7 else "no"))
        if "time_ratio_vs_adamw" in m:
            t = m.get("time_ratio_vs_adamw")
            claims.append(Claim(
                "Muon's step-count win survives its costlier step: less training time to AdamW's final loss.",
                "issue 12's H100 runs (gpt2 preset, one process): Muon 135k vs AdamW 136k tokens/s",
                f"{_fmt_ratio(t)} of AdamW's time (ms/step Muon {1000 * (m.get('s_per_step') or 0):.0f} vs AdamW "
                f"{1000 * (a.get('s_per_step') or 0):.0f}, device {st.get('device', 'cpu')})",
                "yes" if t is not None and t < 1.0 else "no"))
    if "normuon" in table and "muon" in table and table["normuon"].get("final_val_loss") is not None:
        n, m = table["normuon"], table["muon"]
        # Beyond the seeds: NorMuon's paper reports a better loss than Muon at equal tokens; a tie within 1% is "partly".
        gain = (m["final_val_loss"] - n["final_val_loss"]) / m["final_val_loss"]
        claims.append(Claim(
            "Beyond the seeds: NorMuon (per-neuron normalized Muon) reaches a lower loss than Muon at equal tokens.",
            "NorMuon (arXiv 2510.05491): better than Muon at equal tokens in its GPT-2/LLM runs",
            f"NorMuon {n['final_val_loss']:.3f} (lr {n.get('best_lr') or float('nan'):.3g}) vs Muon "
            f"{m['final_val_loss']:.3f} (lr {m.get('best_lr') or float('nan'):.3g}); steps to AdamW's final: "
            f"{_fmt_ratio(n.get('step_ratio_vs_adamw'))} vs {_fmt_ratio(m.get('step_ratio_vs_adamw'))}",
            "yes" if gain > 0.01 else ("partly" if gain > -0.01 else "no")))
    if all(table.get(k, {}).get("final_val_loss") is not None for k in ("muon_cwd", "muon_wd")):
        c, w = table["muon_cwd"], table["muon_wd"]
        gain = (w["final_val_loss"] - c["final_val_loss"]) / w["final_val_loss"]
        claims.append(Claim(
            "Beyond the seeds: cautious weight decay (decay only where W and the update agree in sign) does at least "
            "as well as plain decay.",
            "Cautious weight decay (arXiv 2510.12402): lower loss than plain decoupled decay at equal settings",
            f"Muon, decay 0.1: cautious {c['final_val_loss']:.3f} vs plain {w['final_val_loss']:.3f} (each at its best lr)",
            "yes" if gain > 0.01 else ("partly" if gain > -0.01 else "no")))
    rho = p.get("spearman_rank_vs_work_D")
    if rho is not None:
        claims.append(Claim(
            "Work D's ranking of its eight optimizers carries over to a small GPT on our corpus.",
            "AdamS < Adam < AdamQ < mSGDQ < AdamZ < mSGDZ < mSGDS ≪ mSGD",
            f"Spearman ρ = {rho:.2f}; ours: " + " < ".join(r["optimizer"] for r in p["table"] if "rank_work_D" in r),
            "yes" if rho >= 0.7 else ("partly" if rho > 0 else "no")))
    if "msgd" in table and table["msgd"].get("rank_ours_among_D"):
        n = sum(1 for r in p["table"] if "rank_work_D" in r)
        claims.append(Claim("Plain momentum SGD (p = 1) is clearly the worst of the eight.", "mSGD 3.092 vs ≤ 2.895",
                            f"mSGD rank {table['msgd']['rank_ours_among_D']} of {n}",
                            "yes" if table["msgd"]["rank_ours_among_D"] == n else "no"))
    scale = (f"Model `{st['model']}`, {st['steps']} steps of {st.get('batch_size', '?')}×{st.get('block_size', '?')} "
             f"tokens on {st.get('device', 'cpu')}; lr grid ×{list(st['lr_grid'])} around each default")
    if st.get("max_extensions"):
        scale += f", extended ×2/÷2 up to {st['max_extensions']} times per side while the best is at an edge"
    edges = [r["optimizer"] for r in p["table"] if r.get("lr_at_grid_edge")]
    if edges:
        scale += f"; best lr still at a grid edge: {', '.join(edges)}"
    if replayed:
        note = (f"Committed results ({Path(p['replayed_from']).name}, not rerun by this report). {scale}."
                + (f" Command: `{p['command']}`." if p.get("command") else ""))
    else:
        note = f"{scale}." + (" Quick mode: one lr per optimizer and 40 steps, so the ranking is indicative only."
                              if fresh_quick else "")
    note += _adam_vs_adamw_note(table)
    return SectionResult(claims, ["lm-compare/curves.png"], note)


def _adam_vs_adamw_note(table: dict) -> str:
    """Why the Adam and AdamW rows can coincide: with no weight decay they are one algorithm."""
    a, w = table.get("adam"), table.get("adamw")
    if not a or not w or a.get("final_val_loss") is None or w.get("final_val_loss") is None:
        return ""
    def at(row):
        return f"{row['final_val_loss']:.4f}" + (f" at lr {row['best_lr']:.3g}" if row.get("best_lr") else "")

    return (f"\n\n**Adam vs AdamW** (final val loss {at(a)} vs {at(w)}). `adam` is work D's p = 1 member: Ψ₁(X) = U Σ¹ Vᵀ = X, "
            "so it is plain Adam on the matrices (ε = 1e-8) plus the AdamW part on embeddings and vectors; `adamw` is "
            "torch's AdamW on every parameter (ε = 1e-10). With the trainer's weight decay 0 (what makes AdamW differ "
            "from Adam), betas (0.9, 0.95) in both and equal lrs, the two are the same algorithm up to ε, so equal "
            "rows are expected, not a bug; work D's own 'Adam' baseline is this algorithm too.")


def _qk_settings(quick: bool) -> dict:
    return {"qk-clip": {"quick": quick}}


def _qk_summary(payloads: dict, quick: bool) -> SectionResult:
    rows = payloads["qk-clip"]["results"]
    claims = []
    for att, r in rows.items():
        ours = f"τ = {r['tau']:g}: peak {r['peak_logit_no_clip']:.2f} without, {r['peak_logit_clip']:.2f} with clipping"
        if "steps_over_tau_clip" in r:  # older payloads lack the counts
            ours += (f"; steps over τ: {r['steps_over_tau_clip']} of {r['steps_clip']} with, "
                     f"{r['steps_over_tau_no_clip']} without (over: > τ·(1 + {r['tolerance']:.2g}), rounding)")
        claims.append(Claim(
            f"{att.upper()}: per-head QK-Clip keeps every head's max logit ≤ τ after every step.",
            "Kimi K2 (arXiv 2507.20534): S_h ≤ τ after clipping",
            ours, "yes" if r["clip_holds_every_step"] else "no"))
        lo, lc = r["final_val_loss_no_clip"], r["final_val_loss_clip"]
        if lo is not None and lc is not None:
            claims.append(Claim(f"{att.upper()}: clipping does not hurt the loss.", "Kimi K2: no loss degradation",
                                f"val loss {lo:.3f} without, {lc:.3f} with", "yes" if lc <= lo + 0.02 else "partly"))
    return SectionResult(claims, ["qk-clip/max_logits.png"],
                         "τ is half the unclipped run's peak, so the clip binds at this small scale.")


LM_COMPARE_SECTION = Section("lm-compare", "Work D — spectral optimizers on a small GPT", ["lm-compare"],
                             _lm_settings, _lm_summary, "Qi, Chen, Ye, He, Xiao, arXiv 2602.04669")
QK_CLIP_SECTION = Section("qk-clip", "Work C — QK-Clip on MHA and MLA", ["qk-clip"], _qk_settings, _qk_summary,
                          "Kimi K2 technical report, arXiv 2507.20534")
