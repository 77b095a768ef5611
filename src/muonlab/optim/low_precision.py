"""The step's low-precision paths: the AdamW part on bf16/int8 state piece by piece, and bf16 parameters written back
with stochastic rounding.

Plain functions of the step in progress: everything they read or write (state, the state store) comes through the
:class:`muonlab.optim.state.StepContext`.
"""

from __future__ import annotations

import torch

from muonlab.optim import pipeline as pl
from muonlab.optim.state import ADAMW_PIECE_BYTES, StepContext, adamw_pieces, state_dtype


def adamw_pieces_step(ctx: StepContext, owners: list[torch.Tensor], params: list[torch.Tensor],
                      grads: list[torch.Tensor], steps: list[int], rounded: bool, **hyper) -> None:
    """AdamW (:func:`muonlab.optim.pipeline.adamw_update`) on decoded bf16/int8 state or stochastically rounded
    bf16 parameters, piece by piece: small tensors together, large ones by slices of rows (AdamW is elementwise), so
    that the fp32 moments (and parameters) decoded at once stay within :data:`ADAMW_PIECE_BYTES` (4 MiB) each.

    ``owners``: the parameters, ``params``/``grads``: their local tensors, ``steps``: each one's step count (already
    advanced), ``rounded``: the parameters are written with :func:`round_params`; ``hyper``: ``adamw_update``'s
    lr, betas, eps and decay."""
    fmt = ctx.settings.state_dtype
    for piece in adamw_pieces(params, ADAMW_PIECE_BYTES):
        views = [params[i] if rows is None else params[i][rows[0]:rows[1]] for i, rows in piece]
        moments = [
            [ctx.store.buffers(ctx.state[owners[i]], key, owners[i], params[i], fmt, state_dtype(owners[i]), rows)
             for i, rows in piece]
            for key in ("exp_avg", "exp_avg_sq")
        ]
        targets = [v.float() for v in views] if rounded else views
        pl.adamw_update(targets, [grads[i] if rows is None else grads[i][rows[0]:rows[1]] for i, rows in piece],
                        *moments, [steps[i] for i, _ in piece], **hyper)
        ctx.store.flush()
        if rounded:
            starts = [0 if rows is None else rows[0] * (params[i].numel() // params[i].shape[0]) for i, rows in piece]
            round_params(ctx, views, targets, [owners[i] for i, _ in piece], starts)


def round_params(ctx: StepContext, params: list[torch.Tensor], works: list[torch.Tensor],
                 owners: list[torch.Tensor] | None = None, starts: list[int] | None = None) -> None:
    """Write the fp32 ``works`` into the local ``params``: bf16 ones with stochastic rounding (``param_rounding``
    "stochastic", keyed like the state's rounding), the others as they are. ``owners``/``starts`` when
    ``params`` are slices of local parameters: their parameters and the first element's index in them."""
    owners = owners or [ctx.owner(p) for p in params]
    starts = starts or [0] * len(params)
    bf16 = [i for i, p in enumerate(params) if p.dtype == torch.bfloat16]
    ctx.store.round_params([params[i] for i in bf16], [works[i] for i in bf16],
                           [ctx.state[owners[i]] for i in bf16], [owners[i] for i in bf16],
                           [starts[i] for i in bf16])
    for i, p in enumerate(params):
        if p.dtype != torch.bfloat16:
            p.copy_(works[i])
