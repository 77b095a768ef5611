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
from typing import Iterable, Sequence

import torch

from muonlab.optim import pipeline as pl
from muonlab.optim.base import check_nonnegative, check_unit_interval, state_dtype
from muonlab.optim.muon import TORCH_MUON_EPS, Muon

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


def row_blocks(shape: Sequence[int], group: dict, device=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For the whole parameter: (block index of every row, 1/s² of every row's block, number of blocks).

    Blocks are those of :func:`muonlab.optim.pipeline.to_blocks` (matrices of a stack, ``split_sizes``
    sections, ``num_heads`` heads); both tensors have the parameter's row shape (:func:`row_layout`)."""
    rows_shape, cols = row_layout(shape, group["tensor_layout"])
    rows = rows_shape[-1]  # of each matrix
    matrices = math.prod(rows_shape) // rows
    sections = pl.row_sections(rows, group.get("split_sizes"), group.get("num_heads"))
    rule = group.get("adjust_lr_fn")
    ids, inv_s2 = [], []
    for size, heads in sections:
        block_rows = size // heads
        for _ in range(heads):
            ids.append(torch.full((block_rows,), len(ids)))
            inv_s2.append(torch.full((block_rows,), pl.shape_scale(block_rows, cols, rule) ** -2, dtype=torch.float64))
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
        beta2: float = DEFAULT_BETA2,
        row_eps: float = DEFAULT_ROW_EPS,
        **options,
    ) -> None:
        self._normuon_defaults = dict(beta2=beta2, row_eps=row_eps)
        self._check_row_settings(self._normuon_defaults, "")
        super().__init__(params, lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn,
                         **options)

    def add_param_group(self, param_group: dict) -> None:
        if not self.param_groups:  # the first call (from Optimizer.__init__): the defaults are complete now
            self.defaults.update(self._normuon_defaults)
        super().add_param_group(param_group)
        for group in self.param_groups:
            if group["update"] == "spectral":
                self._check_row_sharding(group)

    @staticmethod
    def _check_row_settings(group: dict, where: str) -> None:
        check_unit_interval(group["beta2"], f"{where}beta2", closed=False)
        check_nonnegative(group["row_eps"], f"{where}row_eps")

    def check_spectral_group(self, group: dict, where: str) -> None:
        super().check_spectral_group(group, where)
        if "beta2" in group:  # Muon.__init__ checks its own defaults before NorMuon's keys are in
            self._check_row_settings(group, where)

    def _check_row_sharding(self, group: dict) -> None:
        for i, p in enumerate(group["params"]):
            if not hasattr(p, "placements"):
                continue
            row_dims = len(row_layout(p.shape, group["tensor_layout"])[0])
            for placement in p.placements:
                if placement.is_shard() and placement.dim % p.dim() >= row_dims:
                    raise ValueError(
                        f"NorMuon: {self._label(group, i)} (shape {tuple(p.shape)}) is sharded along dim "
                        f"{placement.dim}, a column dimension: its per-row second moment needs whole rows on each "
                        "rank (shard along dim 0, as FSDP2 does by default)"
                    )

    # ------------------------------------------------------------------ the step
    def _row_moment(self, local: torch.Tensor, group: dict) -> torch.Tensor:
        """V of a parameter (zeros on first use) as a local tensor of its local rows; a DTensor with the
        parameter's mesh and placements in the state when the parameter is one."""
        owner = self._param_of.get(id(local), local)
        state = self.state[owner]
        if ROW_STATE not in state:
            rows_shape, _ = row_layout(owner.shape, group["tensor_layout"])
            zeros = torch.zeros(local.shape[: len(rows_shape)], dtype=state_dtype(owner), device=local.device)
            if owner is not local:
                from torch.distributed.tensor import DTensor

                strides = tuple(math.prod(rows_shape[i + 1 :]) for i in range(len(rows_shape)))
                zeros = DTensor.from_local(zeros, owner.device_mesh, owner.placements, run_check=False,
                                           shape=torch.Size(rows_shape), stride=strides)
            state[ROW_STATE] = zeros
        v = state[ROW_STATE]
        return v.to_local() if hasattr(v, "to_local") else v

    def _local_rows(self, local: torch.Tensor, group: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
        """:func:`row_blocks` of the parameter, restricted to this rank's rows."""
        owner = self._param_of.get(id(local), local)
        ids, inv_s2, blocks = row_blocks(owner.shape, group, local.device)
        if owner is not local:
            from torch.distributed.tensor import DTensor, Replicate

            mesh = owner.device_mesh
            ids, inv_s2 = (
                DTensor.from_local(t, mesh, [Replicate()] * mesh.ndim, run_check=False)
                .redistribute(mesh, owner.placements)
                .to_local()
                for t in (ids, inv_s2)
            )
        return ids, inv_s2, blocks

    def apply_updates(self, group, params, grads, updates):
        """Row normalization of each update (see the module docstring), then Muon's decay and step."""
        beta2, row_eps = group["beta2"], group["row_eps"]
        rows_of, sharded, sums = [], [], []
        for p, u in zip(params, updates):
            owner = self._param_of.get(id(p), p)
            _, cols = row_layout(owner.shape, group["tensor_layout"])
            ids, inv_s2, blocks = self._local_rows(p, group)
            v = self._row_moment(p, group)
            rows = u.reshape(-1, cols)
            work = torch.promote_types(v.dtype, u.dtype)
            # Σ_j (sU)_ij² (s: the block's shape scale), without an update-sized temporary
            squares = torch.linalg.vector_norm(rows, dim=-1, dtype=work).square()
            # V ← β₂V + (1 − β₂)·mean_j U_ij², with U = (sU)/s
            v.view(-1).lerp_((squares * inv_s2.reshape(-1).to(work) / cols).to(v.dtype), 1 - beta2)
            inverse = (v.reshape(-1).to(work).sqrt() + row_eps).reciprocal()
            # per block: ‖sU‖_F² and ‖sÛ‖_F² (this rank's rows only when the parameter is sharded)
            block_sums = torch.zeros(blocks, 2, dtype=work, device=u.device)
            block_sums.index_add_(0, ids.reshape(-1), torch.stack([squares, squares * inverse.square()], dim=-1))
            rows_of.append((u, rows, ids.reshape(-1), inverse))
            sums.append(block_sums)
            sharded.append(owner if _sharded(owner) else None)
        sums = _sum_over_shards(sums, sharded)
        normalized = []
        for (u, rows, ids, inverse), block_sums in zip(rows_of, sums):
            before, after = block_sums.unbind(-1)
            ratio = torch.where(after > 0, (before / after.clamp(min=torch.finfo(after.dtype).tiny)).sqrt(), 0.0)
            # the updates are this step's own tensors (the transform's output): normalized in place
            normalized.append(rows.mul_((inverse * ratio[ids]).unsqueeze(-1)).reshape(u.shape))
        del rows_of
        super().apply_updates(group, params, grads, normalized)


def _sum_over_shards(sums: list[torch.Tensor], owners: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """The per-block sums of sharded parameters summed over their mesh (one all-reduce per mesh and dtype),
    the others unchanged."""
    groups: dict[tuple, list[int]] = {}
    for i, owner in enumerate(owners):
        if owner is not None:
            groups.setdefault((owner.device_mesh, sums[i].dtype), []).append(i)
    if not groups:
        return sums
    from torch.distributed.tensor import DTensor, Partial, Replicate

    sums = list(sums)
    for (mesh, _), idx in groups.items():
        flat = torch.cat([sums[i].reshape(-1) for i in idx])
        total = (
            DTensor.from_local(flat, mesh, [Partial()] * mesh.ndim, run_check=False)
            .redistribute(mesh, [Replicate()] * mesh.ndim)
            .to_local()
        )
        for i, piece in zip(idx, total.split([sums[i].numel() for i in idx])):
            sums[i] = piece.reshape(sums[i].shape)
    return sums
