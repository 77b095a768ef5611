"""NorMuon (Li et al., arXiv 2510.05491): Muon with a per-neuron second moment after orthogonalization.

Muon's polar factor has all singular values equal, but its rows (output neurons) can still have very
different norms. NorMuon keeps an Adam-like second moment per row of the orthogonalized update and
divides each row by it, then restores the block's Frobenius norm. For each block (a matrix, a head,
a fused section, one matrix of a stack; its rows are the parameter's output rows):

    M ← μM + (1 − μ)G,  O = (1 − μ)G + μM if nesterov else M         (Muon's moment)
    U = polar(O)
    V ← β₂V + (1 − β₂)·mean_j U_ij²                  (per row i, fp32: "row_second_moment")
    Û = U / (√V + ε)  (row-wise),  Û ← Û·‖U‖_F/‖Û‖_F   (per block)
    W ← (1 − ηλ)W − η·s(A, B)·Û                       (s: Muon's shape scale of the block)

No bias correction (the Frobenius rescaling makes the update invariant to a common factor of V).

Where it runs: the polar factor is computed as for Muon (on each matrix's owner rank when distributed);
the row normalization runs in :meth:`NorMuon.apply_updates`, on the local rows of each rank. The update
there already carries the shape scale s, which is constant over a block, so it cancels in ‖U‖_F/‖Û‖_F and
is divided out of V's row means only. Under FSDP2 (DTensor ``Shard(d)`` along a row dimension, ``Shard(0)``
by default) every rank holds whole rows, so V is sharded with them and its update is local; only the two
Frobenius sums per block span ranks: one all-reduce of 2 numbers per block, per chunk of parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

from muonlab.optim import pipeline as pl
from muonlab.optim.base import SpectralOptimizer
from muonlab.optim.groups import label
from muonlab.optim.muon import TORCH_MUON_EPS, Muon, MuonSettings, muon_defaults
from muonlab.optim.settings import Blocks, check_nonnegative, check_unit_interval, fields_of
from muonlab.optim.state import StepContext, state_dtype

ROW_STATE = "row_second_moment"
DEFAULT_BETA2 = 0.95
DEFAULT_ROW_EPS = 1e-8


def row_layout(shape: Sequence[int], tensor_layout: str) -> tuple[tuple[int, ...], int]:
    """(shape of the rows, columns per row) of a parameter as the optimizer sees it.

    2-D (m, n) and ``"flatten"`` (out, in, k…): rows (m,), columns n or in·k…; ``"batch"`` (…, m, n): rows
    (…, m), columns n. The row shape is a prefix of the parameter's shape, so a sharding of the parameter
    along one of its row dimensions shards the rows the same way."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2 or tensor_layout == "flatten":
        return shape[:1], math.prod(shape[1:])
    return shape[:-1], shape[-1]


@dataclass(frozen=True, kw_only=True)
class NorMuonSettings(MuonSettings):
    """Muon's settings and the row second moment's decay β₂ and ε."""

    beta2: float
    row_eps: float


def row_blocks(
    shape: Sequence[int], blocks: Blocks, adjust_lr_fn: str | None, device=None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For the whole parameter: (block index of every row, 1/s² of every row's block, number of blocks).

    Blocks are those of :func:`muonlab.optim.pipeline.to_blocks` (matrices of a stack, ``split_sizes``
    sections, ``num_heads`` heads); s is the shape scale of ``adjust_lr_fn``; both tensors have the parameter's
    row shape (:func:`row_layout`)."""
    rows_shape, cols = row_layout(shape, blocks.tensor_layout)
    rows = rows_shape[-1]  # of each matrix
    matrices = math.prod(rows_shape) // rows
    sections = pl.row_sections(rows, blocks.split_sizes, blocks.num_heads)
    ids, inv_s2 = [], []
    for size, heads in sections:
        block_rows = size // heads
        for _ in range(heads):
            ids.append(torch.full((block_rows,), len(ids)))
            inv_s2.append(torch.full((block_rows,), pl.shape_scale(block_rows, cols, adjust_lr_fn) ** -2, dtype=torch.float64))
    per_matrix = len(ids)
    ids = torch.cat(ids) + per_matrix * torch.arange(matrices).unsqueeze(1)
    inv_s2 = torch.cat(inv_s2).expand(matrices, -1)
    return ids.reshape(rows_shape).to(device), inv_s2.reshape(rows_shape).to(device), matrices * per_matrix


def _sharded(t: torch.Tensor) -> bool:
    return hasattr(t, "placements") and any(p.is_shard() for p in t.placements)


class NorMuon(Muon):
    """NorMuon: Muon's polar factor, rows normalized by their second moment, Frobenius norm kept.

    Args: those of :class:`muonlab.Muon` (same order and defaults), plus keyword-only
        beta2: decay β₂ ∈ [0, 1) of the per-row second moment V (0.95).
        row_eps: ε in U/(√V + ε) (1e-8).
    ``cautious_wd=True`` (every spectral optimizer) decays only entries where W and the update share a sign.

    State per matrix parameter: ``"momentum_buffer"`` (parameter-shaped) and ``"row_second_moment"``
    (one value per output row, shape :func:`row_layout`; fp32 for bf16/fp16 parameters). Distributed as
    Muon; under FSDP2 the parameters must be sharded along a row dimension (``Shard(0)``, the default).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | torch.Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: Sequence[float] | None = None,
        eps: float = TORCH_MUON_EPS,
        ns_steps: int | None = None,
        adjust_lr_fn: str | None = None,
        *,
        method: str | None = None,
        polar_dtype: torch.dtype | None = None,
        beta2: float = DEFAULT_BETA2,
        row_eps: float = DEFAULT_ROW_EPS,
        **options,
    ) -> None:
        self._row_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, int]] = {}  # see _local_rows
        defaults = muon_defaults(lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn,
                                 method, polar_dtype)
        # Muon's arguments plus NorMuon's two, as one set of defaults: no construction order to get right.
        SpectralOptimizer.__init__(self, params, dict(defaults, beta2=beta2, row_eps=row_eps), **options)

    def spectral_settings(self, group: Mapping, where: str) -> NorMuonSettings:
        muon = super().spectral_settings(group, where)
        check_unit_interval(group["beta2"], f"{where}beta2", closed=False)
        check_nonnegative(group["row_eps"], f"{where}row_eps")
        return NorMuonSettings(**fields_of(muon), beta2=group["beta2"], row_eps=group["row_eps"])

    def check_matrix_params(self, group: Mapping, settings: NorMuonSettings, where: str) -> None:
        super().check_matrix_params(group, settings, where)
        for i, p in enumerate(group["params"]):
            if not hasattr(p, "placements"):
                continue
            row_dims = len(row_layout(p.shape, settings.blocks.tensor_layout)[0])
            for placement in p.placements:
                if placement.is_shard() and placement.dim % p.dim() >= row_dims:
                    raise ValueError(
                        f"NorMuon: {label(group, i)} (shape {tuple(p.shape)}) is sharded along dim "
                        f"{placement.dim}, a column dimension: its per-row second moment needs whole rows on each "
                        "rank (shard along dim 0, as FSDP2 does by default)"
                    )

    # ------------------------------------------------------------------ the step
    def _row_moment(self, ctx: StepContext, local: torch.Tensor) -> torch.Tensor:
        """V of a parameter (zeros on first use) as a local tensor of its local rows; a DTensor with the
        parameter's mesh and placements in the state when the parameter is one."""
        owner = ctx.owner(local)
        state = ctx.state[owner]
        if ROW_STATE not in state:
            rows_shape, _ = row_layout(owner.shape, ctx.settings.blocks.tensor_layout)
            zeros = torch.zeros(local.shape[: len(rows_shape)], dtype=state_dtype(owner), device=local.device)
            if owner is not local:
                from torch.distributed.tensor import DTensor

                strides = tuple(math.prod(rows_shape[i + 1 :]) for i in range(len(rows_shape)))
                zeros = DTensor.from_local(zeros, owner.device_mesh, owner.placements, run_check=False,
                                           shape=torch.Size(rows_shape), stride=strides)
            state[ROW_STATE] = zeros
        v = state[ROW_STATE]
        return v.to_local() if hasattr(v, "to_local") else v

    def _local_rows(
        self, ctx: StepContext, local: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(this rank's rows in each block of the parameter, 1/(s²·columns) of each local row, columns).

        From :func:`row_blocks`; cached by value (shape, block settings, device, dtype, sharding), so a step
        does no per-parameter set-up work after the first. The local rows of a block are consecutive (a block
        is a run of consecutive rows, a shard a box of them in the same order), so counts locate them."""
        owner = ctx.owner(local)
        sharding = (owner.device_mesh, tuple(owner.placements)) if owner is not local else None
        settings = ctx.settings
        key = (tuple(owner.shape), settings.blocks, settings.adjust_lr_fn, local.device, dtype, sharding)
        cached = self._row_cache.get(key)
        if cached is None:
            ids, inv_s2, blocks = row_blocks(owner.shape, settings.blocks, settings.adjust_lr_fn, local.device)
            cols = row_layout(owner.shape, settings.blocks.tensor_layout)[1]
            inv_s2_per_col = inv_s2 / cols
            if sharding is not None:
                from torch.distributed.tensor import DTensor, Replicate

                mesh = owner.device_mesh
                ids, inv_s2_per_col = (
                    DTensor.from_local(t, mesh, [Replicate()] * mesh.ndim, run_check=False)
                    .redistribute(mesh, owner.placements)
                    .to_local()
                    for t in (ids, inv_s2_per_col)
                )
            counts = torch.bincount(ids.reshape(-1), minlength=blocks)
            cached = self._row_cache[key] = (counts, inv_s2_per_col.reshape(-1).to(dtype), cols)
        return cached

    def apply_updates(self, ctx, params, grads, updates):
        """Row normalization of each update (see the module docstring), then Muon's decay and step.

        The row-sized work of the whole chunk is done in a few foreach / concatenated ops (one kernel each
        on CUDA, not one per parameter); only the row sums and the final scaling pass over the updates."""
        beta2, row_eps = ctx.settings.beta2, ctx.settings.row_eps
        moments = [self._row_moment(ctx, p).view(-1) for p in params]
        # the row work in ≥ the state's precision (fp32 for half parameters, fp64 for fp64 ones)
        works = [torch.promote_types(v.dtype, u.dtype) for v, u in zip(moments, updates)]
        layouts = [self._local_rows(ctx, p, w) for p, w in zip(params, works)]
        rows = [u.reshape(-1, cols) for u, (_, _, cols) in zip(updates, layouts)]
        # Σ_j (sU)_ij² (s: the block's shape scale), without an update-sized temporary
        squares = [torch.linalg.vector_norm(r, dim=-1, dtype=w) for r, w in zip(rows, works)]
        torch._foreach_mul_(squares, squares)
        # V ← β₂V + (1 − β₂)·mean_j U_ij², with U = (sU)/s
        means = torch._foreach_mul(squares, [layout[1] for layout in layouts])
        means = [m.to(v.dtype) for m, v in zip(means, moments)]
        torch._foreach_lerp_(moments, means, 1 - beta2)
        del means
        inverse = torch._foreach_sqrt([v.to(w) for v, w in zip(moments, works)])
        torch._foreach_add_(inverse, row_eps)
        torch._foreach_reciprocal_(inverse)
        factors = _frobenius_kept([ctx.owner(p) for p in params], layouts, squares, inverse)
        normalized = [r.mul_(f.unsqueeze(-1)).reshape(u.shape) for r, f, u in zip(rows, factors, updates)]
        del rows, factors
        super().apply_updates(ctx, params, grads, normalized)


def _frobenius_kept(owners, layouts, squares, inverse) -> list[torch.Tensor]:
    """Each row's factor 1/(√V + ε)·‖U‖_F/‖Û‖_F of its block, for every parameter (``owners``) of the chunk.

    The two sums per block, Σ(sU)² and Σ(sU)²/(√V + ε)², are taken over this rank's rows and, for the
    parameters sharded over a mesh, summed over it: one all-reduce per mesh for the whole chunk. Segment sums
    over consecutive rows, not scatter-adds: no atomics on CUDA, so a step is reproducible bit for bit."""
    parts: dict[tuple, list[int]] = {}
    for i, owner in enumerate(owners):
        mesh = owner.device_mesh if _sharded(owner) else None
        parts.setdefault((mesh, squares[i].dtype, squares[i].device), []).append(i)
    factors: list[torch.Tensor | None] = [None] * len(owners)
    for (mesh, _, _), idx in parts.items():
        counts = torch.cat([layouts[i][0] for i in idx]) if len(idx) > 1 else layouts[idx[0]][0]
        sq = torch.cat([squares[i] for i in idx]) if len(idx) > 1 else squares[idx[0]]
        inv = torch.cat([inverse[i] for i in idx]) if len(idx) > 1 else inverse[idx[0]]
        # counts sum to the rows by construction (_local_rows): unsafe=True skips a device-to-host check
        sums = torch.segment_reduce(torch.stack([sq, sq * inv * inv], dim=-1), "sum", lengths=counts, unsafe=True)
        if mesh is not None:
            from torch.distributed.tensor import DTensor, Partial, Replicate

            sums = (
                DTensor.from_local(sums, mesh, [Partial()] * mesh.ndim, run_check=False)
                .redistribute(mesh, [Replicate()] * mesh.ndim)
                .to_local()
            )
        before, after = sums.unbind(-1)
        # a zero block (zero update) stays zero
        ratio = torch.where(after > 0, (before / after.clamp(min=torch.finfo(after.dtype).tiny)).sqrt(), 0.0)
        per_row = ratio.repeat_interleave(counts, output_size=sq.numel()).mul_(inv)
        for i, f in zip(idx, per_row.split([squares[i].numel() for i in idx])):
            factors[i] = f
    return factors
