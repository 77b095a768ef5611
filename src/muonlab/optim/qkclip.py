"""QK-Clip (MuonClip's post-step rule), per head; works with any optimizer.

Source: Kimi K2 technical report (arXiv 2507.20534, §2.1) and docs/math.md §4. After the optimizer step, for each
attention head h with max pre-softmax logit S_h = max over the batch of q·k/√d:

    γ_h = min(1, τ / S_h)
    MHA:               W_q[rows of h] *= √γ_h,  W_k[rows of h] *= √γ_h         (logit_h scales by γ_h)
    GQA (shared key):  W_q[rows of h] *= γ_h,   the shared key head untouched  (no neighbour is clipped)
    MLA + decoupled RoPE: q_C, k_C rows of h *= √γ_h, q_R rows of h *= γ_h, the shared k_R never touched.

Heads with S_h ≤ τ are not touched at all (their weights stay bitwise equal). The forward pass is unchanged.

The attention protocol (what a model must offer; see ``muonlab.tasks.lm.model`` for MHA/GQA/MLA):
every attention module that takes part has

- ``record_max_logits: bool`` — when True its ``forward`` sets ``max_logits``, a ``(n_head,)`` tensor of
  each head's largest pre-softmax logit over the batch and all causal (query, key) pairs;
- ``qk_clip_rules() -> list[HeadRows]`` — which rows of which weight belong to each head and the power of
  γ_h they are scaled by. A module decides itself what is shared (and therefore left out).

Two ways to measure S_h:

- ``clip.step(forward)`` (exact): ``forward()`` is run again without gradient after the optimizer step, layer
  by layer: each attention module is measured, clipped, and re-run before the next layer sees its output.
  Afterwards re-running the same batch gives every head's max logit ≤ τ (up to rounding).
- ``clip.step()`` (Kimi's cheap form): uses the logits recorded during the training forward (before the
  update); no extra compute, the bound holds only approximately after the update.

Mixed precision and ``torch.compile``: the re-measure must see the weights as they are *now*. Inside an autocast
region torch caches the low-precision copy of every parameter it casts (keyed by the tensor, not its contents) until
the outermost region exits, so after an in-place clip — or an ``optimizer.step()`` inside the same region — a re-run
would silently use the old bf16 weights (the reported logits would be the unclipped ones and later layers would be
measured on unclipped outputs). ``step`` therefore drops that cache before measuring and after every clip. That is
the cheap correct choice: within one forward each weight is cast once anyway (layers run in order), so dropping the
cache costs only the re-cast of the clipped module's few weights; disabling the cache for the whole pass would cost
the same, and re-measuring in fp32 would make the exact form several times dearer on a GPU while measuring logits the
bf16 model never produces. The measuring pass also runs eagerly (``torch.compiler.set_stance("force_eager")``): a
compiled model would otherwise trace the per-layer hooks (graph breaks, recompiles) instead of running them.
Under bf16 the reported post-clip maxima are the true logits of the bf16 forward; they sit at τ up to bf16 rounding
(see ``BF16_TOLERANCE``), as does an fp32 re-measure.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn


@dataclass
class HeadRows:
    """Rows ``rows[h]`` (a ``(n_head, r)`` index tensor) of ``weight`` belong to head h; scaled by γ_h**power."""

    weight: torch.Tensor
    rows: torch.Tensor
    power: float


# Relative excess over τ that bf16 rounding alone can leave in a re-measured clipped head. bf16 keeps 8 significant
# bits: unit roundoff u = 2⁻⁸. A logit q·k measured under autocast carries a relative error ≲ 4u (q and k each pass
# through two roundings: the weight cast and the matmul output; this holds for a well-conditioned dot product, as the
# largest, aligned q·k pair is; the input itself is identical for both measurements, since the re-run sees it too). γ comes from one such measurement and the post-clip value is another, so the
# post-clip maximum is τ·(1 + e′)/(1 + e) ≤ τ·(1 + 4u)/(1 − 4u) ≈ τ·(1 + 8u) = τ·(1 + 2⁻⁵).
BF16_TOLERANCE = 8 * 2.0 ** -8


def _drop_stale_casts() -> None:
    """Forget autocast's cached low-precision parameter copies (a no-op outside autocast): after a weight changed in
    place, the next op under autocast must cast the new values, not reuse the copy made before the change."""
    torch.clear_autocast_cache()


def _eager():
    """Run a compiled model eagerly (its compiled graph would trace our Python hooks); nothing to do if torch.compile
    was never used in this process (then ``torch._dynamo`` is not imported, and importing it costs seconds)."""
    if "torch._dynamo" not in sys.modules:
        return contextlib.nullcontext()
    return torch.compiler.set_stance("force_eager")


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Every submodule of ``model`` that speaks the QK-Clip protocol, in forward (registration) order."""
    return [m for m in model.modules() if hasattr(m, "qk_clip_rules") and hasattr(m, "record_max_logits")]


@torch.no_grad()
def clip_module(module: nn.Module, max_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Apply the per-head rule to one attention module given its per-head max logits; returns γ (n_head,)."""
    gamma = torch.clamp(tau / max_logits.float().clamp_min(1e-30), max=1.0)
    gamma = torch.where(max_logits > tau, gamma, torch.ones_like(gamma))
    clipped = (gamma < 1.0).nonzero().flatten().tolist()
    if clipped:
        for rule in module.qk_clip_rules():
            for h in clipped:
                factor = gamma[h].item() ** rule.power
                rows = rule.rows[h]
                rule.weight[rows] = rule.weight[rows] * torch.tensor(factor, dtype=rule.weight.dtype, device=rule.weight.device)
    return gamma


class QKClip:
    """Per-head QK-Clip for the attention modules of ``model`` (any optimizer: call after ``optimizer.step()``).

    >>> clip = QKClip(model, tau=100.0)
    >>> loss.backward(); optimizer.step(); clip.step(lambda: model(x))
    """

    def __init__(self, model: nn.Module, tau: float = 100.0):
        if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
            raise ValueError(f"tau must be a positive finite number, got {tau!r}")
        self.model = model
        self.tau = float(tau)
        self.modules = attention_modules(model)
        if not self.modules:
            raise ValueError("model has no attention module with qk_clip_rules() and record_max_logits")
        for module in self.modules:
            module.qk_clip_rules()  # fails early (e.g. QK-norm) rather than at the first clip
        self.last_gamma: list[torch.Tensor] = []
        self.last_max_logits: list[torch.Tensor] = []

    def enable_recording(self, on: bool = True) -> None:
        for module in self.modules:
            module.record_max_logits = on

    @torch.no_grad()
    def step(self, forward: Callable[[], object] | None = None) -> torch.Tensor:
        """Clip every head over τ. Returns the (n_modules, n_head) max logits *after* clipping.

        With ``forward``: re-measured after the step, layer by layer (exact). Without: the logits recorded
        during the last forward are used, and the returned values are those logits times γ."""
        self.last_gamma, self.last_max_logits = [], []
        if forward is None:
            for module in self.modules:
                if module.max_logits is None:
                    raise RuntimeError("no recorded max logits: enable_recording() before the training forward")
                gamma = clip_module(module, module.max_logits, self.tau)
                self.last_gamma.append(gamma)
                self.last_max_logits.append(module.max_logits * gamma)
            return torch.stack(self.last_max_logits)

        def hook(module, inputs, output):
            gamma = clip_module(module, module.max_logits, self.tau)
            self.last_gamma.append(gamma)
            if bool((gamma < 1.0).any()):
                _drop_stale_casts()                # else autocast re-uses the unclipped bf16 weights
                output = module.forward(*inputs)   # re-run with clipped weights: later layers see it
            self.last_max_logits.append(module.max_logits.clone())
            return output

        previous = [m.record_max_logits for m in self.modules]
        handles = [m.register_forward_hook(hook) for m in self.modules]
        try:
            self.enable_recording(True)
            _drop_stale_casts()  # the optimizer step may have run inside the caller's autocast region
            with _eager():
                forward()
        finally:
            for handle in handles:
                handle.remove()
            for module, on in zip(self.modules, previous):
                module.record_max_logits = on
        if len(self.last_max_logits) != len(self.modules):
            raise RuntimeError("forward() did not run every attention module exactly once")
        return torch.stack(self.last_max_logits)

    def state_dict(self) -> dict:
        return {"tau": self.tau}

    def load_state_dict(self, state: dict) -> None:
        self.tau = float(state["tau"])
