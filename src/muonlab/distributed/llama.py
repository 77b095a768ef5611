"""A small Llama-style model and the layouts large models train with, built with torch's own APIs.

Used by the layout tests, ``muonlab bench dist --layout`` and docs/scale.md. The model: token embedding,
blocks of (RMSNorm → causal attention → RMSNorm → SwiGLU MLP, with residuals), a final RMSNorm and an untied
(or tied) output head. Attention projects q, k, v with three matrices (``fused_qkv=False``, torchtitan's
``wq``/``wk``/``wv``) or one fused matrix whose rows are ordered head by head, each head's q, k and v rows
together (``wqkv``: 3·d rows). That order keeps whole heads together when tensor parallelism cuts the rows
into contiguous parts, and lets Muon orthogonalize each head's q, k and v separately with
``num_heads = 3·heads``. An optional mixture of experts adds an expert stack ``(experts, hidden, dim)`` to
each block (every expert applied to every token, weighted by a softmax gate: the layouts, not the routing,
are what is tested).

:func:`parallelize` lays the model out the way torchtitan does, on a mesh from ``init_device_mesh``:

- ``fsdp``: ``fully_shard`` per block, then the root (1-D mesh of all ranks);
- ``hsdp``: the same on a 2-D ("replicate", "shard") mesh: placements (Replicate(), Shard(0));
- ``tp``: ``parallelize_module`` with the tensor-parallel plan on a 1-D "tp" mesh of all ranks
  (column-parallel q/k/v and w1/w3, row-parallel wo and w2), the rest replicated plain tensors;
- ``fsdp_tp``: the plan on ``mesh["tp"]``, then ``fully_shard(block, mesh=mesh["dp"])`` on a ("dp", "tp")
  mesh: column-parallel weights get (_StridedShard(0, sf=tp), Shard(0)), row-parallel ones (Shard(0), Shard(1));
- ``ep``: ``fully_shard`` on a 1-D mesh of a model with experts: each expert stack is Shard(0) on its expert
  dim, so every rank holds whole experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LAYOUTS = ("fsdp", "hsdp", "tp", "fsdp_tp", "ep")


@dataclass(frozen=True)
class LlamaConfig:
    vocab: int = 64
    dim: int = 32
    heads: int = 4
    hidden: int = 64
    layers: int = 2
    fused_qkv: bool = False
    tied: bool = False
    experts: int = 0  # > 0: an expert stack per block


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.head_dim = config.dim // config.heads
        if config.fused_qkv:
            self.wqkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        else:
            self.wq = nn.Linear(config.dim, config.dim, bias=False)
            self.wk = nn.Linear(config.dim, config.dim, bias=False)
            self.wv = nn.Linear(config.dim, config.dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds only its heads
        if hasattr(self, "wqkv"):
            qkv = self.wqkv(x).view(batch, length, -1, 3, self.head_dim)
            q, k, v = qkv.unbind(dim=3)
        else:
            q, k, v = (w(x).view(batch, length, -1, self.head_dim) for w in (self.wq, self.wk, self.wv))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) ⊙ w3 x)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.hidden, bias=False)
        self.w2 = nn.Linear(config.hidden, config.dim, bias=False)
        self.w3 = nn.Linear(config.dim, config.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Experts(nn.Module):
    """``experts`` SwiGLU-free MLPs as stacks: w_in (E, hidden, dim), w_out (E, dim, hidden), a softmax gate."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.dim, config.experts, bias=False)
        self.w_in = nn.Parameter(torch.randn(config.experts, config.hidden, config.dim) / config.dim**0.5)
        self.w_out = nn.Parameter(torch.randn(config.experts, config.dim, config.hidden) / config.hidden**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.gate(x), dim=-1)  # (batch, length, E)
        hidden = F.silu(torch.einsum("bld,ehd->bleh", x, self.w_in))
        out = torch.einsum("bleh,edh->bled", hidden, self.w_out)
        return (out * weights.unsqueeze(-1)).sum(dim=2)


class Block(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = nn.RMSNorm(config.dim)
        self.attention = Attention(config)
        self.ffn_norm = nn.RMSNorm(config.dim)
        self.feed_forward = FeedForward(config)
        self.moe = Experts(config) if config.experts else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        h = self.ffn_norm(x)
        out = self.feed_forward(h)
        if self.moe is not None:
            out = out + self.moe(h)
        return x + out


class Llama(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.RMSNorm(config.dim)
        self.output = nn.Linear(config.dim, config.vocab, bias=False)
        if config.tied:
            self.output.weight = self.tok_embeddings.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.output(self.norm(x))


def tp_plan(config: LlamaConfig) -> dict:
    """torchtitan's tensor-parallel plan for one block (no sequence parallelism)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    qkv = ["attention.wqkv"] if config.fused_qkv else ["attention.wq", "attention.wk", "attention.wv"]
    plan = {name: ColwiseParallel() for name in qkv + ["feed_forward.w1", "feed_forward.w3"]}
    plan.update({"attention.wo": RowwiseParallel(), "feed_forward.w2": RowwiseParallel()})
    return plan


def make_mesh(layout: str, world_size: int, device: str = "cpu"):
    """The mesh ``layout`` uses: 1-D for fsdp/tp/ep, (2, W/2) for hsdp ("replicate", "shard") and fsdp_tp ("dp", "tp")."""
    from torch.distributed.device_mesh import init_device_mesh

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout in ("hsdp", "fsdp_tp"):
        if world_size % 2 or world_size < 4:
            raise ValueError(f"layout {layout!r} needs an even world size of at least 4, got {world_size}")
        names = ("replicate", "shard") if layout == "hsdp" else ("dp", "tp")
        return init_device_mesh(device, (2, world_size // 2), mesh_dim_names=names)
    return init_device_mesh(device, (world_size,), mesh_dim_names=("tp",) if layout == "tp" else ("dp",))


def parallelize(model: Llama, layout: str, mesh) -> Llama:
    """Lay ``model`` out in place (see the module docstring); returns it."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import parallelize_module

    if layout in ("fsdp", "hsdp", "ep"):
        for block in model.layers:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    elif layout == "tp":
        for block in model.layers:
            parallelize_module(block, mesh, tp_plan(model.config))
    elif layout == "fsdp_tp":
        for block in model.layers:
            parallelize_module(block, mesh["tp"], tp_plan(model.config))
        for block in model.layers:
            fully_shard(block, mesh=mesh["dp"])
        fully_shard(model, mesh=mesh["dp"])
    else:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return model


def data_ranks(layout: str, mesh, rank: int) -> tuple[int, int]:
    """(this rank's data slice, number of slices): tensor-parallel ranks share one slice."""
    if layout == "tp":
        return 0, 1
    if layout == "fsdp_tp":
        return mesh.get_coordinate()[0], mesh.size(0)
    return rank, mesh.size()


def muon_groups(model: Llama, heads: bool = False) -> list[dict]:
    """Muon's param groups for the model: block matrices (the experts' gate included; per-head q/k/v when
    ``heads``), expert stacks as batches of matrices, and the AdamW part (embedding, norms, output head).

    Under ``fsdp_tp`` the matrix group holds tensor-parallel weights on the ("dp", "tp") mesh next to the gate
    on the "dp" sub-mesh (it is not in the tensor-parallel plan): muonlab reads both over the 2-D mesh."""
    config = model.config
    matrices, qkv, experts, rest = [], [], [], []
    for name, p in model.named_parameters():
        named = (name, p)  # names make muonlab.plan's table and error messages readable
        if name.startswith("layers.") and p.ndim == 3:
            experts.append(named)
        elif name.startswith("layers.") and p.ndim == 2:
            (qkv if heads and ".attention.w" in name and not name.endswith("wo.weight") else matrices).append(named)
        else:
            rest.append(named)
    groups = [{"params": matrices, "kind": "matrix"}]
    if qkv:
        count = 3 * config.heads if config.fused_qkv else config.heads
        groups.append({"params": qkv, "kind": "matrix", "num_heads": count})
    if experts:
        groups.append({"params": experts, "kind": "matrix", "tensor_layout": "batch"})
    groups.append({"params": rest, "kind": "vector"})
    return [g for g in groups if g["params"]]
