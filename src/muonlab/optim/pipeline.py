"""The functional pieces every spectral optimizer is built from.

One step of any optimizer here is the pipeline (docs/math.md §4; docs/design.md for where each stage runs)

    moment     G → O        momentum, Nesterov, or Adam's normalized m̂/(√v̂ + ε)  (the optimizer's spectral_inputs)
    shape      O → blocks   view the parameter as a batch of matrices (conv flatten, stacks, heads): to_blocks
    transform  blocks → D   polar(O), Ψ_p(O), ‖O‖_*·polar(O), …   (the optimizer's transform, batched over
                            same-shape blocks)
    scale      D → s·D      s from the block's shape (Keller, Moonshot, spectral, none): shape_scale
    decay      W ← (1 − ηλ)W − η s D   (the optimizer's apply_updates)

The pure functions below do the shape, scale and AdamW pieces; the optimizer classes in this
package supply the moment and the transform.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

# How a parameter of ≥ 3 dimensions becomes matrices.
#   "flatten": (out, in, k₁, …) → one (out, in·k₁·…) matrix — conv filters (Keller's rule);
#   "batch":   (…, m, n) → a batch of m×n matrices — stacks of experts or heads.
TENSOR_LAYOUTS = ("flatten", "batch")

# Learning-rate scale s(A, B) for a matrix of A rows (fan_out) and B columns (fan_in).
ADJUST_LR_FNS = ("original", "match_rms_adamw", "spectral", "none")


def check_adjust_lr_fn(rule: str | None, where: str = "") -> None:
    """Refuse a shape-scale rule that is neither None nor one of :data:`ADJUST_LR_FNS` — the one check every optimizer
    and :func:`shape_scale` use. The message starts with torch.optim.Muon's own sentence (drop-in), then says what
    muonlab accepts; ``where`` prefixes it (e.g. "param group 1 (matrix): ")."""
    if rule is not None and rule not in ADJUST_LR_FNS:
        raise ValueError(f"{where}Adjust learning rate function {rule} is not supported: adjust_lr_fn must be None or "
                         f"one of {', '.join(ADJUST_LR_FNS)}; got {rule!r}")


def shape_scale(rows: int, cols: int, rule: str | None) -> float:
    """The per-matrix factor s of W ← W − η s D, from the matrix's shape (docs/math.md §4).

    ``None``/``"original"``: √max(1, A/B) (Keller Jordan; torch.optim.Muon's default);
    ``"match_rms_adamw"``: 0.2·√max(A, B) (Moonshot, arXiv 2502.16982: update RMS ≈ AdamW's);
    ``"spectral"``: √(A/B) (microsoft/dion); ``"none"``: 1.
    """
    check_adjust_lr_fn(rule)
    if rule is None or rule == "original":
        return math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if rule == "spectral":
        return math.sqrt(rows / cols)
    return 1.0  # "none"


def matrix_batch(t: torch.Tensor, tensor_layout: str) -> torch.Tensor:
    """``t`` as a (B, m, n) batch of matrices (a view when possible)."""
    if t.dim() == 2:
        return t.unsqueeze(0)
    if tensor_layout == "flatten":
        return t.reshape(1, t.shape[0], -1)
    return t.reshape(-1, t.shape[-2], t.shape[-1])


def row_sections(rows: int, split_sizes: Sequence[int] | None, num_heads: int | None) -> list[tuple[int, int]]:
    """(rows per section, blocks per section) after splitting rows by ``split_sizes`` then ``num_heads``.

    Raises ValueError when the sizes do not tile ``rows``.
    """
    sizes = list(split_sizes) if split_sizes is not None else [rows]
    if sum(sizes) != rows:
        raise ValueError(f"split_sizes {tuple(sizes)} must sum to the parameter's rows ({rows})")
    heads = num_heads or 1
    for size in sizes:
        if size % heads:
            raise ValueError(f"num_heads={heads} must divide every section's rows; got a section of {size} rows")
    return [(size, heads) for size in sizes]


def block_shapes(shape: Sequence[int], blocks) -> tuple[tuple[int, int, int], ...]:
    """(count, m, n) of each section of blocks :func:`to_blocks` cuts a tensor of ``shape`` into, for a group's
    :class:`muonlab.optim.settings.Blocks`.

    Computed from the shape alone (no tensor): the step uses it to group parameters whose blocks
    batch together and to weigh each parameter's matrix work."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        batch, rows, cols = 1, shape[0], shape[1]
    elif blocks.tensor_layout == "flatten":
        batch, rows, cols = 1, shape[0], math.prod(shape[1:])
    else:
        batch, rows, cols = math.prod(shape[:-2]), shape[-2], shape[-1]
    if blocks.whole:
        return ((batch, rows, cols),)
    sections = row_sections(rows, blocks.split_sizes, blocks.num_heads)
    return tuple((batch * heads, size // heads, cols) for size, heads in sections)


def to_blocks(t: torch.Tensor, blocks) -> list[torch.Tensor]:
    """Split a parameter-shaped tensor into the (B, m, n) batches its group orthogonalizes separately.

    Per-head orthogonalization (``num_heads``) splits rows (dim −2) into equal head blocks; fused
    projections (``split_sizes``, e.g. QKV) split rows into sections first. Blocks are views
    where the layout allows.
    """
    x = matrix_batch(t, blocks.tensor_layout)
    if blocks.whole:
        return [x]
    batch, rows, cols = x.shape
    sections = row_sections(rows, blocks.split_sizes, blocks.num_heads)
    parts = x.split([size for size, _ in sections], dim=1) if len(sections) > 1 else (x,)
    return [part.reshape(batch * heads, size // heads, cols) for part, (size, heads) in zip(parts, sections)]


def from_blocks(parts: Sequence[torch.Tensor], like: torch.Tensor, blocks) -> torch.Tensor:
    """Inverse of :func:`to_blocks`: assemble blocks into a tensor of ``like``'s shape."""
    if len(parts) == 1 and blocks.num_heads in (None, 0, 1):
        return parts[0].reshape(like.shape)
    batch = matrix_batch(like, blocks.tensor_layout).shape[0]
    cols = parts[0].shape[-1]
    rows = [b.reshape(batch, -1, cols) for b in parts]
    whole = rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)
    return whole.reshape(like.shape)


def adamw_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """AdamW (Loshchilov & Hutter), in place; same arithmetic as torch.optim.AdamW.

    m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², W ← (1−ηλ)W − η m̂/(√v̂ + ε); ``steps`` are the
    step counts after this step (for the bias corrections 1 − βᵗ).

    Plain tensors whose parameter, gradient and moments share one dtype go through torch's fused
    AdamW kernel (CPU and CUDA): one pass over the tensors instead of one per foreach op, equal to
    the foreach arithmetic up to fp32 rounding. The rest (DTensor shards, fp32 moments of bf16/fp16
    parameters) take the foreach path.
    """
    if not params:
        return
    hyper = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    fused: dict[tuple, list[int]] = {}
    rest: list[int] = []
    for i, p in enumerate(params):
        if _fusable(p, grads[i], exp_avgs[i], exp_avg_sqs[i]):
            fused.setdefault((p.device, p.dtype), []).append(i)
        else:
            rest.append(i)
    for (device, _), idx in fused.items():
        # The kernel reads the step count from a tensor on the parameters' device. torch.full launches a
        # fill kernel (torch.tensor(value, device=cuda) would copy from the host and wait for it), and
        # parameters at the same step share one tensor.
        step_tensors: dict[int, torch.Tensor] = {}
        for i in idx:
            if steps[i] not in step_tensors:
                step_tensors[steps[i]] = torch.full((), float(steps[i]), dtype=torch.float32, device=device)
        torch._fused_adamw_(
            [params[i] for i in idx],
            [grads[i] for i in idx],
            [exp_avgs[i] for i in idx],
            [exp_avg_sqs[i] for i in idx],
            [],
            [step_tensors[steps[i]] for i in idx],
            amsgrad=False,
            maximize=False,
            **hyper,
        )
    if rest:
        _foreach_adamw(*([x[i] for i in rest] for x in (params, grads, exp_avgs, exp_avg_sqs, steps)), **hyper)


_FUSED_DEVICES = ("cpu", "cuda")


def _fusable(*tensors: torch.Tensor) -> bool:
    # Under torch.compile the foreach ops are traced and fused by the compiler; the fused kernel is an
    # opaque mutating op on step tensors made inside the graph, which functionalization refuses.
    if torch.compiler.is_compiling():
        return False
    first = tensors[0]
    return first.device.type in _FUSED_DEVICES and all(
        type(t) in (torch.Tensor, torch.nn.Parameter) and t.dtype == first.dtype and t.device == first.device
        for t in tensors
    )


def _foreach_adamw(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay) -> None:
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    if weight_decay:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    step_sizes = [-lr / (1 - beta1**t) for t in steps]
    sqrt_bc2 = [math.sqrt(1 - beta2**t) for t in steps]
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, sqrt_bc2)
    torch._foreach_add_(denoms, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)


def adam_direction(
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[int],
    *,
    beta1: float,
    beta2: float,
    eps: float,
) -> list[torch.Tensor]:
    """Update the Adam moments in place and return O = m̂/(√v̂ + ε) (work D's Adam-family input)."""
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, [math.sqrt(1 - beta2**t) for t in steps])
    torch._foreach_add_(denoms, eps)
    out = torch._foreach_div(exp_avgs, [1 - beta1**t for t in steps])
    torch._foreach_div_(out, denoms)
    return out


def to_scalar(value: float | torch.Tensor) -> float:
    """A Python float from a float or a 1-element tensor (tensor learning rates)."""
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)
