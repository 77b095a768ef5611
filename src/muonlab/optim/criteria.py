"""The routing criteria: what in a model tells a hidden matrix from an embedding table, an output head, a vector or
a mixture-of-experts router.

:func:`muonlab.optim.routing.route` asks :func:`route_one` about each trainable parameter, given the modules that own
it (and :func:`guess_output_layer`, :func:`no_weight_decay_names` once per model). Every decision carries the name of
the criterion that made it (the "why" column of :func:`muonlab.optim.routing.explain`); the criteria in
:data:`CRITERIA` can be switched off one by one (``disable=("degenerate", ...)``). Criteria, first match wins:

1. ``override``: a glob on the parameter name → the kind you say;
2. ``vector``: fewer than 2 dimensions → ``"vector"`` (biases, norm gains, scalars);
3. ``tied``: a weight shared by an embedding and another module (tied input/output) → ``"head"``;
4. ``embedding``: owned by ``nn.Embedding``/``nn.EmbeddingBag`` → ``"embedding"``;
5. ``embedding_role``: a parameter held directly by a module that is not a layer (not a Linear, conv, embedding,
   transposed linear or ``nn.MultiheadAttention``) that is a lookup table or a learned token by its role: a leading
   unit dimension (ViT's ``cls_token`` 1×1×D, ``pos_embed`` 1×N×D, register tokens, learned queries 1×Q×D) or an
   attribute name saying so (:data:`EMBEDDING_ROLE_WORDS`: Swin's ``relative_position_bias_table``, Perceiver's
   ``latents``, SigLIP's attention-pooling ``probe``) → ``"embedding"``;
6. ``named_head``: owned by a module named like a head (``head_names``, or ending in ``_head``) → ``"head"``;
7. ``depthwise``: a conv filter with one input channel per group (``groups == in_channels > 1``, shape (out, 1, k…)):
   each output channel has its own k×k filter, so the flattened (out, k²) matrix couples filters that never meet in
   the forward pass → ``"vector"`` (AdamW, per entry);
8. ``degenerate``: a matrix, as the optimizer would see it (conv filters flattened, stacks per matrix), whose smaller
   side is below ``min_dim`` (:data:`MIN_MATRIX_DIM` = 4) or whose aspect ratio exceeds ``max_aspect``
   (:data:`MAX_ASPECT_RATIO` = 128) → ``"vector"``: orthogonalizing a 1- or 2-row matrix only normalizes its rows, and a
   very thin one has almost no spectrum to equalize. The thresholds are timm's Muon rules (``timm/optim/muon.py``,
   ``_is_suitable_for_muon``), so that the two libraries agree on these shapes;
9. ``router``: a mixture-of-experts router (a module whose class name contains "Router", or a linear named like one,
   :data:`ROUTER_NAMES`, with fewer outputs than inputs) → ``router_kind``, ``"matrix"`` by default: Moonlight
   (Kimi team, arXiv 2502.16982) trains its DeepSeek-V3-style MoE with Muon on every matrix but the embedding and the
   output head, routers included, and timm's rules do the same for any router of ≥ 4 experts. Pass
   ``router_kind="head"`` to give routers the AdamW part instead (a router is a small classifier over experts);
   one-row gates (Qwen2-MoE's ``shared_expert_gate``) are degenerate (8.) either way;
10. ``guessed_head`` (only when no parameter is a head by 1., 3. or 6., and ``guess_head=True``): the weight of the
    *last* ``nn.Linear`` in registration order → ``"head"`` when either
    a. it maps an embedding's width back to that embedding's rows (``in_features == embedding_dim`` and
       ``out_features == num_embeddings != embedding_dim``: a vocabulary projection, untied), or
    b. no other ``nn.Linear`` takes ``out_features`` inputs (its output feeds no further linear layer: the logits of
       ``nn.Sequential(..., nn.Linear(128, 10))``) and none other produces that many outputs (two towers ending in
       projections of one width, CLIP's, have no single output layer to guess);
11. ``conv``: a conv filter → ``"matrix"``, flattened to (out, in·k…);
12. ``stack``: other ≥ 3-D tensors → ``"matrix"``, a batch of their last two dims (``stack_layout``);
13. ``matrix``: other 2-D → ``"matrix"`` (hidden layer).

Modifiers that apply on top of a matrix decision (also in :data:`CRITERIA`, also named in the "why" column):

- ``transposed``: the weight of a transposed linear layer — Hugging Face's ``Conv1D`` (GPT-2, GPT, …), recognised
  without importing transformers by its ``nx``/``nf`` attributes and a weight of shape (nx, nf) = (in, out) — is
  orthogonalized as the (out, in) matrix it is: the shape scale reads the true (fan_out, fan_in), ``split_sizes`` and
  ``num_heads`` cut output features, NorMuon normalizes output rows (group key ``"transposed": True``);
- ``fused``: a fused projection whose parts are separate layers elsewhere is orthogonalized as its parts
  (``split_sizes`` in equal sections, :data:`FUSED_PROJECTIONS`): GPT-2's ``c_attn`` and timm's ``qkv`` (Q, K, V: out =
  3·in), ``nn.MultiheadAttention``'s ``in_proj_weight``, ``gate_up_proj`` (gate and up halves of a gated MLP, e.g. transformers' MoE expert stacks) — so that a
  fused model trains as its unfused twin (Llama's separate ``q_proj``/``k_proj``/``v_proj``);
- ``no_weight_decay``: names listed by the model's own ``no_weight_decay()`` (timm's convention: ``pos_embed``,
  ``cls_token``, …) get weight decay 0 in whichever part they land (``weight_decay``/``adamw_weight_decay`` of their
  group).

Why 10. looks only at the last Linear: a hidden layer's outputs are always some layer's inputs, so a Linear whose
width no other Linear reads is an output; but widths coincide (vocab 512 = 4 × d_model 128 makes an MLP's up-projection
look like a vocabulary projection; a 16-row position table of a width-16 model matches every width-16 layer), so the
guess is confined to the one layer that output layers almost always are, the last one registered, and a. asks for
both of the embedding's sizes. A model that registers its head first, or ends with a layer whose width happens to match another
Linear's input (e.g. ``nn.Linear(16, 16)`` after ``nn.Linear(16, 16)``), is not recognised: name the module ``head``
(or pass ``head_names``), or say it with ``overrides={"fc.weight": "head"}``. Guessed routes are marked ``guessed``
and :func:`muonlab.optim.routing.explain` lists them with the override that undoes them
(``overrides={"NAME": "matrix"}``, or ``guess_head=False`` for none).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

HEAD_NAMES = ("head", "lm_head", "classifier", "output_layer")
EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)

# The criteria that can be switched off (``disable=``), in the order they are tried; see the module docstring.
CRITERIA = ("tied", "embedding", "embedding_role", "named_head", "depthwise", "degenerate", "router", "guessed_head",
         "transposed", "fused", "no_weight_decay")

# timm's thresholds for a matrix worth orthogonalizing (timm/optim/muon.py, _is_suitable_for_muon).
MIN_MATRIX_DIM = 4
MAX_ASPECT_RATIO = 128.0

# Words in the attribute name of a directly held parameter that say it is a table or learned tokens (5.).
EMBEDDING_ROLE_WORDS = ("token", "embed", "pos", "table", "quer", "latent", "register", "prompt")

# Linear layers named like a mixture-of-experts router (9.), besides modules whose class name contains "Router".
ROUTER_NAMES = ("gate", "router", "shared_expert_gate")

# name of a fused projection → (number of equal sections, how many times the input width its outputs must be, or
# None for any width): Q/K/V of GPT-2's c_attn, timm's qkv and nn.MultiheadAttention's in_proj_weight, gate/up of a
# gated MLP (transformers' gate_up_proj).
FUSED_PROJECTIONS = {"c_attn": (3, 3), "qkv": (3, 3), "in_proj_weight": (3, 3), "gate_up_proj": (2, None)}


@dataclass
class Route:
    """One parameter's routing decision: its kind, the criteria that decided it (``criteria[0]`` the kind's, the rest
    modifiers) and why, and the group options it needs (``tensor_layout``, ``split_sizes``, ``transposed``…)."""

    name: str
    param: torch.Tensor
    kind: str
    reason: str
    options: dict[str, Any] = field(default_factory=dict)
    guessed: bool = False   # decided by the output-layer heuristic (10.), not by a name, a tie or an override
    criteria: tuple[str, ...] = ()

    @property
    def criterion(self) -> str:
        return self.criteria[0] if self.criteria else ""


def first_match(patterns: Mapping[str, Any] | None, names: list[str]) -> tuple[str, Any] | None:
    """(pattern, value) of the first glob in ``patterns`` that matches any of ``names`` (a parameter's aliases)."""
    for pattern, value in (patterns or {}).items():
        if any(fnmatch.fnmatchcase(n, pattern) for n in names):
            return pattern, value
    return None


def is_transposed_linear(module: nn.Module) -> bool:
    """True for a linear layer that stores its weight as (in, out): Hugging Face's ``Conv1D`` (``nx`` inputs, ``nf``
    outputs, weight (nx, nf)). Read from the attributes and the weight's shape, so transformers need not be
    imported; a module whose weight does not have that shape is not one."""
    weight = getattr(module, "weight", None)
    nx, nf = getattr(module, "nx", None), getattr(module, "nf", None)
    return (
        isinstance(weight, torch.Tensor) and weight.dim() == 2 and isinstance(nx, int) and isinstance(nf, int)
        and tuple(weight.shape) == (nx, nf)
    )


@dataclass
class RoutingContext:
    head_names: tuple[str, ...]
    overrides: Mapping[str, str] | None
    stack_layout: str
    disabled: frozenset[str]
    min_dim: int
    max_aspect: float
    router_kind: str



def no_weight_decay_names(model: nn.Module) -> tuple[str, ...]:
    """The names (or globs) of the model's own ``no_weight_decay()`` — timm's convention — or ()."""
    method = getattr(model, "no_weight_decay", None)
    if not callable(method):
        return ()
    try:
        names = method()
    except TypeError:   # a no_weight_decay that is not timm's zero-argument method: not ours to call
        return ()
    return tuple(n for n in (names or ()) if isinstance(n, str))


def is_conv(mods) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for _, m in mods)


def is_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, *EMBEDDING_TYPES)) or (
        is_transposed_linear(module)
    )


def matrix_view(p: torch.Tensor, conv: bool, transposed: bool, stack_layout: str) -> tuple[int, int]:
    """(rows, cols) of one matrix as the optimizer orthogonalizes it (before any head split)."""
    if p.dim() == 2:
        rows, cols = p.shape
        return (cols, rows) if transposed else (rows, cols)
    if conv or stack_layout == "flatten":
        return p.shape[0], p[0].numel()
    return p.shape[-2], p.shape[-1]


def route_one(name, p, mods, names, ctx: RoutingContext) -> Route:
    on = lambda criterion: criterion not in ctx.disabled  # noqa: E731
    conv = is_conv(mods)
    transposed = on("transposed") and p.dim() == 2 and any(is_transposed_linear(m) and m.weight is p for _, m in mods)
    hit = first_match(ctx.overrides, names)
    if hit is not None:
        pattern, kind = hit
        options = {}
        if kind == "matrix" and p.dim() >= 3:
            options["tensor_layout"] = "flatten" if conv else ctx.stack_layout
        if kind == "matrix" and transposed:
            options["transposed"] = True
        return Route(name, p, kind, f"override {pattern!r}", options, criteria=("override",))
    if p.dim() < 2:
        what = "scalar" if p.dim() == 0 else "1-D (bias, norm gain or other vector)"
        return Route(name, p, "vector", what, criteria=("vector",))
    shape = tuple(p.shape)
    embeds = [n for n, m in mods if isinstance(m, EMBEDDING_TYPES)]
    others = [n or "<root>" for n, m in mods if not isinstance(m, EMBEDDING_TYPES)]
    if embeds and others and on("tied"):
        return Route(name, p, "head", f"shared by embedding {embeds[0]!r} and {others[0]!r} (input and output tied)",
                     criteria=("tied",))
    if embeds and on("embedding"):
        return Route(name, p, "embedding", f"weight of {type(mods[0][1]).__name__} {embeds[0]!r}", criteria=("embedding",))
    if on("embedding_role") and mods and not any(is_layer(m) for _, m in mods):
        attribute = name.rsplit(".", 1)[-1]
        owner = type(mods[0][1]).__name__
        if shape[0] == 1:
            return Route(name, p, "embedding",
                         f"{'×'.join(map(str, shape))} held by {owner}: a leading unit dim (learned tokens or a "
                         "position table)", criteria=("embedding_role",))
        word = next((w for w in EMBEDDING_ROLE_WORDS if w in attribute.lower()), None)
        if word is not None:
            return Route(name, p, "embedding", f"held by {owner}, named {attribute!r} ({word!r}: a lookup table "
                         "or learned tokens)", criteria=("embedding_role",))
    if on("named_head"):
        for mod_name, _ in mods:
            last = mod_name.rsplit(".", 1)[-1]
            if last in ctx.head_names or last.endswith("_head"):
                return Route(name, p, "head", f"module named {last!r} (an output head)", criteria=("named_head",))
    if on("depthwise") and conv:
        module = next(m for _, m in mods if isinstance(m, nn.modules.conv._ConvNd))
        if module.groups > 1 and module.groups == module.in_channels:
            return Route(name, p, "vector", f"depthwise conv filter {shape} (groups = in_channels = {module.groups}): "
                         "one filter per channel, no matrix to orthogonalize", criteria=("depthwise",))
    rows, cols = matrix_view(p, conv, transposed, ctx.stack_layout)
    if on("degenerate"):
        small, large = min(rows, cols), max(rows, cols)
        if small < ctx.min_dim:
            return Route(name, p, "vector", f"{rows}×{cols} matrix: smaller side {small} < {ctx.min_dim}",
                         criteria=("degenerate",))
        if large / small > ctx.max_aspect:
            return Route(name, p, "vector", f"{rows}×{cols} matrix: aspect ratio {large / small:.0f} > "
                         f"{ctx.max_aspect:g}", criteria=("degenerate",))
    if on("router") and is_router(name, mods, rows, cols):
        if ctx.router_kind != "matrix":
            return Route(name, p, ctx.router_kind, f"mixture-of-experts router ({rows} experts): router_kind="
                         f"{ctx.router_kind!r}", criteria=("router",))
        route_ = matrix_route(name, p, conv, transposed, rows, cols, ctx)
        route_.reason = (f"mixture-of-experts router ({rows} experts): spectral, as in Moonlight (arXiv "
                         "2502.16982); router_kind='head' gives routers AdamW")
        route_.criteria = ("router",) + route_.criteria[1:]
        return route_
    return matrix_route(name, p, conv, transposed, rows, cols, ctx)


def is_router(name: str, mods, rows: int, cols: int) -> bool:
    if any("router" in type(m).__name__.lower() for _, m in mods):
        return True
    return rows < cols and any(
        isinstance(m, nn.Linear) and mod_name.rsplit(".", 1)[-1] in ROUTER_NAMES for mod_name, m in mods
    )


def matrix_route(name, p, conv, transposed, rows, cols, ctx: RoutingContext) -> Route:
    shape = tuple(p.shape)
    options: dict[str, Any] = {}
    if conv:
        criterion, why = "conv", f"conv filter {shape} flattened to ({rows}, {cols})"
        options["tensor_layout"] = "flatten"
    elif p.dim() >= 3:
        batch = p.shape[:-2].numel()
        criterion = "stack"
        if ctx.stack_layout == "batch":
            why = f"{p.dim()}-D stack: {batch} matrices of {tuple(p.shape[-2:])}"
        else:
            why = f"{p.dim()}-D tensor flattened to ({rows}, {cols})"
        options["tensor_layout"] = ctx.stack_layout
    elif transposed:
        criterion, why = "transposed", (f"transposed linear (in, out) = {shape}: orthogonalized as the ({rows}, {cols}) "
                                   "matrix it is")
        options["transposed"] = True
    else:
        criterion, why = "matrix", "2-D hidden matrix"
    route_ = Route(name, p, "matrix", why, options, criteria=(criterion,))
    if "fused" not in ctx.disabled:
        attribute = name.rsplit(".", 1)[-1]
        owner = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
        key = attribute if attribute in FUSED_PROJECTIONS else owner if attribute == "weight" else None
        spec = FUSED_PROJECTIONS.get(key) if key is not None else None
        if spec is not None and not conv:
            sections, ratio = spec
            if rows % sections == 0 and (ratio is None or rows == ratio * cols):
                options["split_sizes"] = (rows // sections,) * sections
                route_.reason += f"; fused: {key!r} orthogonalized as {sections} sections of {rows // sections} rows"
                route_.criteria += ("fused",)
    return route_


def guess_output_layer(model: nn.Module) -> tuple[torch.Tensor, str] | None:
    """Criterion 10. of the module docstring: (weight, reason) of the last trainable nn.Linear if it looks like the
    model's output layer, else None."""
    # frozen Linears count as layers (a frozen head still makes the layer before it hidden); only a trainable
    # last one can be routed
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears or not linears[-1][1].weight.requires_grad:
        return None
    name, last = linears[-1]
    what = f"last nn.Linear {name or '<root>'!r}"
    tables = {(m.embedding_dim, m.num_embeddings) for m in model.modules() if isinstance(m, EMBEDDING_TYPES)}
    if (last.in_features, last.out_features) in tables and last.in_features != last.out_features:
        return last.weight, (f"{what} maps the embedding's width {last.in_features} to its {last.out_features} rows "
                             "(a vocabulary projection)")
    if all(m.in_features != last.out_features and m.out_features != last.out_features for _, m in linears[:-1]):
        return last.weight, f"{what}, its {last.out_features} outputs feed no other Linear"
    return None
