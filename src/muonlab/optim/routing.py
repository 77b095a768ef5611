"""Which parameter gets which update: ``param_groups(model)`` and ``explain(model)``.

A 2-D shape alone does not tell a hidden matrix from an embedding table, an output head or a matrix too thin to
orthogonalize (docs/math.md §4, docs/routing.md), so routing looks at the modules that own each parameter. Every
decision carries the name of the criterion that made it (the "why" column of :func:`explain`); the criteria in
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
and :func:`explain` lists them with the override that undoes them (``overrides={"NAME": "matrix"}``, or
``guess_head=False`` for none).

Matrix kinds get the spectral update; the other kinds the optimizers' built-in AdamW part.
``heads`` asks for per-head orthogonalization: ``{"*.q_proj.weight": 8, "*.qkv.weight":
{"split_sizes": (512, 512, 512), "num_heads": 8}}`` (it replaces a ``fused`` split of the same parameter).
"""

from __future__ import annotations

import fnmatch
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, TextIO

import torch
from torch import nn

from muonlab.optim.groups import KINDS
from muonlab.optim.pipeline import TENSOR_LAYOUTS

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


def looks_unrouted(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that look like an embedding or an output head by name alone (a component in
    :data:`HEAD_NAMES` or ending in ``_head``, or containing "embed", or GPT-2's ``wte``/``wpe``): what a named
    parameter list routed by shape would send to the spectral update against the usual practice."""
    found = []
    for name in names:
        parts = name.split(".")
        if any(p in HEAD_NAMES or p.endswith("_head") or "embed" in p or p in ("wte", "wpe") for p in parts):
            found.append(name)
    return found


def _matches(patterns: Mapping[str, Any] | None, names: list[str]) -> tuple[str, Any] | None:
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
class _Context:
    head_names: tuple[str, ...]
    overrides: Mapping[str, str] | None
    stack_layout: str
    disabled: frozenset[str]
    min_dim: int
    max_aspect: float
    router_kind: str


def route(
    model: nn.Module,
    *,
    head_names: tuple[str, ...] = HEAD_NAMES,
    overrides: Mapping[str, str] | None = None,
    heads: Mapping[str, int | Mapping[str, Any]] | None = None,
    stack_layout: str = "batch",
    guess_head: bool = True,
    disable: Iterable[str] = (),
    min_dim: int = MIN_MATRIX_DIM,
    max_aspect: float = MAX_ASPECT_RATIO,
    router_kind: str = "matrix",
) -> list[Route]:
    """The routing decision for every trainable parameter of ``model`` (see module docstring).

    ``disable``: names from :data:`CRITERIA` to switch off (``guess_head=False`` is ``disable=("guessed_head",)``);
    ``min_dim``/``max_aspect``: the ``degenerate`` thresholds; ``router_kind``: the kind of MoE routers."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if stack_layout not in TENSOR_LAYOUTS:
        raise ValueError(f"stack_layout must be one of {', '.join(TENSOR_LAYOUTS)}; got {stack_layout!r}")
    for pattern, kind in (overrides or {}).items():
        if kind not in KINDS:
            raise ValueError(f"overrides[{pattern!r}] must be one of {', '.join(KINDS)}; got {kind!r}")
    if isinstance(disable, str):
        disable = (disable,)
    disabled = frozenset(disable)
    unknown = sorted(disabled - set(CRITERIA))
    if unknown:
        raise ValueError(f"disable must name criteria from {', '.join(CRITERIA)}; got {', '.join(map(repr, unknown))}")
    if isinstance(min_dim, bool) or not isinstance(min_dim, int) or min_dim < 1:
        raise ValueError(f"min_dim must be a positive int, got {min_dim!r}")
    if isinstance(max_aspect, bool) or not isinstance(max_aspect, (int, float)) or not max_aspect >= 1:
        raise ValueError(f"max_aspect must be a number ≥ 1, got {max_aspect!r}")
    if router_kind not in KINDS:
        raise ValueError(f"router_kind must be one of {', '.join(KINDS)}; got {router_kind!r}")
    if not guess_head:
        disabled |= {"guessed_head"}
    ctx = _Context(tuple(head_names), overrides, stack_layout, disabled, min_dim, float(max_aspect), router_kind)

    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    aliases: dict[int, list[str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), [])
            if all(m is not module for _, m in owners[id(p)]):
                owners[id(p)].append((mod_name, module))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            aliases.setdefault(id(p), [])
            if full not in aliases[id(p)]:
                aliases[id(p)].append(full)

    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decided = [_route_one(name, p, owners.get(id(p), []), aliases.get(id(p), [name]), ctx) for name, p in trainable]
    guess = None
    if "guessed_head" not in disabled and not any(r.kind == "head" for r in decided):
        guess = _guess_output_layer(model)
    no_decay = _no_weight_decay_names(model) if "no_weight_decay" not in disabled else ()
    routes = []
    for (name, p), route_ in zip(trainable, decided):
        names = aliases.get(id(p), [name])
        if guess is not None and p is guess[0] and route_.kind == "matrix" and route_.criterion != "override":
            route_ = Route(name, p, "head", f"guessed output layer: {guess[1]}", guessed=True, criteria=("guessed_head",))
        if route_.kind == "matrix":
            hit = _matches(heads, names)
            if hit is not None:
                pattern, spec = hit
                spec = {"num_heads": spec} if isinstance(spec, int) else dict(spec)
                unknown = set(spec) - {"num_heads", "split_sizes"}
                if unknown:
                    raise ValueError(f"heads[{pattern!r}] accepts num_heads and split_sizes; got {sorted(unknown)}")
                if "fused" in route_.criteria:   # the user's blocks replace the fused split
                    route_.options.pop("split_sizes", None)
                    route_.criteria = tuple(r for r in route_.criteria if r != "fused")
                    route_.reason = "; ".join(part for part in route_.reason.split("; ") if not part.startswith("fused:"))
                route_.options.update(spec)
                route_.reason += f"; heads: per-head blocks {spec} (heads[{pattern!r}])"
                route_.criteria += ("heads",)
        hit = next((n for n in names if any(fnmatch.fnmatchcase(n, pattern) for pattern in no_decay)), None)
        if hit is not None:
            route_.options["no_weight_decay"] = True
            route_.reason += "; no_weight_decay: weight decay 0 (listed by the model's no_weight_decay())"
            route_.criteria += ("no_weight_decay",)
        routes.append(route_)
    return routes


def _no_weight_decay_names(model: nn.Module) -> tuple[str, ...]:
    """The names (or globs) of the model's own ``no_weight_decay()`` — timm's convention — or ()."""
    method = getattr(model, "no_weight_decay", None)
    if not callable(method):
        return ()
    try:
        names = method()
    except TypeError:   # a no_weight_decay that is not timm's zero-argument method: not ours to call
        return ()
    return tuple(n for n in (names or ()) if isinstance(n, str))


def _is_conv(mods) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for _, m in mods)


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, *EMBEDDING_TYPES)) or (
        is_transposed_linear(module)
    )


def _matrix_view(p: torch.Tensor, conv: bool, transposed: bool, stack_layout: str) -> tuple[int, int]:
    """(rows, cols) of one matrix as the optimizer orthogonalizes it (before any head split)."""
    if p.dim() == 2:
        rows, cols = p.shape
        return (cols, rows) if transposed else (rows, cols)
    if conv or stack_layout == "flatten":
        return p.shape[0], p[0].numel()
    return p.shape[-2], p.shape[-1]


def _route_one(name, p, mods, names, ctx: _Context) -> Route:
    on = lambda criterion: criterion not in ctx.disabled  # noqa: E731
    conv = _is_conv(mods)
    transposed = on("transposed") and p.dim() == 2 and any(is_transposed_linear(m) and m.weight is p for _, m in mods)
    hit = _matches(ctx.overrides, names)
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
    if on("embedding_role") and mods and not any(_is_layer(m) for _, m in mods):
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
    rows, cols = _matrix_view(p, conv, transposed, ctx.stack_layout)
    if on("degenerate"):
        small, large = min(rows, cols), max(rows, cols)
        if small < ctx.min_dim:
            return Route(name, p, "vector", f"{rows}×{cols} matrix: smaller side {small} < {ctx.min_dim}",
                         criteria=("degenerate",))
        if large / small > ctx.max_aspect:
            return Route(name, p, "vector", f"{rows}×{cols} matrix: aspect ratio {large / small:.0f} > "
                         f"{ctx.max_aspect:g}", criteria=("degenerate",))
    if on("router") and _is_router(name, mods, rows, cols):
        if ctx.router_kind != "matrix":
            return Route(name, p, ctx.router_kind, f"mixture-of-experts router ({rows} experts): router_kind="
                         f"{ctx.router_kind!r}", criteria=("router",))
        route_ = _matrix_route(name, p, conv, transposed, rows, cols, ctx)
        route_.reason = (f"mixture-of-experts router ({rows} experts): spectral, as in Moonlight (arXiv "
                         "2502.16982); router_kind='head' gives routers AdamW")
        route_.criteria = ("router",) + route_.criteria[1:]
        return route_
    return _matrix_route(name, p, conv, transposed, rows, cols, ctx)


def _is_router(name: str, mods, rows: int, cols: int) -> bool:
    if any("router" in type(m).__name__.lower() for _, m in mods):
        return True
    return rows < cols and any(
        isinstance(m, nn.Linear) and mod_name.rsplit(".", 1)[-1] in ROUTER_NAMES for mod_name, m in mods
    )


def _matrix_route(name, p, conv, transposed, rows, cols, ctx: _Context) -> Route:
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


def _guess_output_layer(model: nn.Module) -> tuple[torch.Tensor, str] | None:
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


def param_groups(model: nn.Module, *, matrix_first: bool = False, **kwargs) -> list[dict]:
    """Param-group dicts for any muonlab optimizer: ``"params"``, ``"param_names"``, ``"kind"`` (and
    ``"tensor_layout"``/``"num_heads"``/``"split_sizes"``/``"transposed"`` where needed; ``"weight_decay"`` or
    ``"adamw_weight_decay"`` 0 for the model's ``no_weight_decay()`` names), in order of first appearance —
    the spectral (``"matrix"``) groups first with ``matrix_first=True``, for frameworks that report group 0's lr as
    *the* learning rate (Hugging Face's Trainer, Lightning's progress bar).

    Keyword arguments are those of :func:`route`: ``head_names``, ``overrides``, ``heads``, ``stack_layout``,
    ``guess_head``, ``disable``, ``min_dim``, ``max_aspect``, ``router_kind``.
    """
    groups: dict[tuple, dict] = {}
    for r in route(model, **kwargs):
        options = dict(r.options)
        if r.kind == "matrix" and r.param.dim() == 2 and "tensor_layout" not in options:
            options["tensor_layout"] = "flatten"  # irrelevant for 2-D: shares the conv group
        if "split_sizes" in options and options["split_sizes"] is not None:
            options["split_sizes"] = tuple(options["split_sizes"])
        if options.pop("no_weight_decay", False):
            options["weight_decay" if r.kind == "matrix" else "adamw_weight_decay"] = 0.0
        key = (r.kind, tuple(sorted(options.items())))
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "kind": r.kind, **options}
        groups[key]["params"].append(r.param)
        groups[key]["param_names"].append(r.name)
    out = list(groups.values())
    if matrix_first:
        out.sort(key=lambda g: g["kind"] != "matrix")   # stable: first appearance within each part
    return out


def explain(model: nn.Module, *, file: TextIO | None = sys.stdout, **kwargs) -> str:
    """A table of every parameter: shape, kind, update and why — ``criterion: reason``, the criterion's name from the
    module docstring first (``disable=`` takes those names). Printed to ``file`` (None: not printed).

    Routes decided by the output-layer guess (10.) are marked ``(guessed)`` in the kind column, and a note after
    the table says how to override each of them."""
    rows = [("parameter", "shape", "kind", "rule", "why")]
    routes = route(model, **kwargs)
    for r in routes:
        rows.append(
            (r.name, "×".join(map(str, r.param.shape)) or "scalar", r.kind + (" (guessed)" if r.guessed else ""),
             "spectral" if r.kind == "matrix" else "AdamW", f"{r.criterion}: {r.reason}")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    guessed = [r.name for r in routes if r.guessed]
    if guessed:
        undo = ", ".join(f"{n!r}: 'matrix'" for n in guessed)
        lines.append(
            f"guessed: {', '.join(guessed)} routed as the output layer (no module named like a head, no tied "
            f"embedding). If wrong, pass overrides={{{undo}}} (or guess_head=False) to param_groups/explain; if right, "
            "name the module 'head' or pass overrides={" + undo.replace("'matrix'", "'head'") + "} to make it explicit."
        )
    text = "\n".join(lines)
    if file is not None:
        print(text, file=file)
    return text
