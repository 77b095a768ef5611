"""A small nanoGPT-style decoder: pre-norm blocks, RoPE, MHA / GQA / MLA attention.

Every attention module speaks the small *QK-Clip protocol* of :mod:`muonlab.optim.qkclip`:

- ``record_max_logits`` (bool): when True, ``forward`` stores in ``max_logits`` a ``(n_head,)`` tensor
  holding each head's largest pre-softmax logit ``q·k/√d`` over the batch and all causal (query, key) pairs;
- ``qk_clip_rules()``: which weight rows belong to which head, and with which power of γ_h QK-Clip scales them.

The attention output itself always comes from ``F.scaled_dot_product_attention``; the logit maximum is a
separate, gradient-free ``q kᵀ`` so that switching the record on or off never changes the forward pass.

MLA is DeepSeek-V2's multi-head latent attention with decoupled RoPE (arXiv 2405.04434, §2.1):
    c_q = RMSNorm(W_DQ x),   q_C = W_UQ c_q (per head),   q_R = RoPE(W_QR c_q) (per head)
    c_kv = RMSNorm(W_DKV x), k_C = W_UK c_kv (per head), v = W_UV c_kv (per head)
    k_R = RoPE(W_KR x)       (one rotary key shared by all heads)
    logit_h = (q_C,h·k_C,h + q_R,h·k_R) / √(d_nope + d_rope)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTENTION_KINDS = ("mha", "gqa", "mla")


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 257
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    attention: str = "mha"          # "mha" | "gqa" | "mla"
    n_kv_head: int | None = None    # GQA: key/value heads (default n_head // 2); MHA: = n_head
    qk_norm: bool = False           # RMSNorm on each head's q and k (MHA/GQA only)
    tie_embeddings: bool = True
    rope_base: float = 10000.0
    mlp_ratio: int = 4
    # MLA sizes (None: derived from n_embd / n_head, see resolved())
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    nope_head_dim: int | None = None
    rope_head_dim: int | None = None
    v_head_dim: int | None = None

    def resolved(self) -> "GPTConfig":
        """Check the sizes and fill the derived defaults."""
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        head_dim = self.n_embd // self.n_head
        updates: dict = {}
        if self.attention == "mha":
            if self.n_kv_head not in (None, self.n_head):
                raise ValueError("n_kv_head differs from n_head: use attention='gqa'")
            updates["n_kv_head"] = self.n_head
        elif self.attention == "gqa":
            kv = self.n_kv_head if self.n_kv_head is not None else max(1, self.n_head // 2)
            if kv < 1 or self.n_head % kv:
                raise ValueError(f"n_kv_head ({kv}) must divide n_head ({self.n_head})")
            updates["n_kv_head"] = kv
        else:
            if self.qk_norm:
                raise ValueError("qk_norm is for MHA/GQA; MLA already normalizes its latents")
            updates["n_kv_head"] = self.n_head
            updates["q_lora_rank"] = self.q_lora_rank or max(16, self.n_embd // 2)
            updates["kv_lora_rank"] = self.kv_lora_rank or max(16, self.n_embd // 2)
            updates["nope_head_dim"] = self.nope_head_dim or head_dim
            updates["rope_head_dim"] = self.rope_head_dim or max(2, head_dim // 2)
            updates["v_head_dim"] = self.v_head_dim or head_dim
            if updates["rope_head_dim"] % 2:
                raise ValueError("rope_head_dim must be even")
        if head_dim % 2 and self.attention != "mla":
            raise ValueError(f"head dim n_embd/n_head = {head_dim} must be even for RoPE")
        return replace(self, **updates)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Presets: sizes only; vocab_size comes from the tokenizer.
PRESETS: dict[str, dict] = {
    "micro": dict(n_layer=2, n_head=2, n_embd=64, block_size=64),      # tests / quick experiments
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=128),     # CPU-sized: the LM lab's default
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
    "medium": dict(n_layer=8, n_head=8, n_embd=512, block_size=512),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),  # GPT-2 124M (with a 50k BPE vocab)
}


def preset_problem(name: str | None) -> str | None:
    """What is wrong with a ``--model`` value (it must name a preset), or None; the one check every command uses."""
    if name is None or name in PRESETS:
        return None
    return f"--model: unknown model {name!r}; expected one of {', '.join(PRESETS)}"


def preset_config(name: str, **overrides) -> GPTConfig:
    if name not in PRESETS:
        raise ValueError(preset_problem(name))
    kw = dict(PRESETS[name])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return GPTConfig(**kw).resolved()


# ---------------------------------------------------------------------------------------------- RoPE
class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021), rotating pairs (x_i, x_{i+d/2})."""

    def __init__(self, dim: int, max_len: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T, dim)
        T = x.shape[-2]
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def causal_max_logits(q: torch.Tensor, k: torch.Tensor, scale: float, max_elems: int = 1 << 24) -> torch.Tensor:
    """Per-head max over batch and causal pairs of scale·q·kᵀ; q, k: (B, H, T, d). Returns (H,) float32.

    Computed without gradient, in chunks over the batch so memory stays bounded."""
    B, H, T, _ = q.shape
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    chunk = max(1, max_elems // (H * T * T))
    best = torch.full((H,), -torch.inf, device=q.device)
    with torch.no_grad():
        for start in range(0, B, chunk):
            s = (q[start:start + chunk].float() @ k[start:start + chunk].float().transpose(-1, -2)) * scale
            s = s.masked_fill(~mask, -torch.inf)
            best = torch.maximum(best, s.amax(dim=(0, 2, 3)))
    return best


def head_rows(n_head: int, rows_per_head: int, device=None) -> torch.Tensor:
    """(n_head, rows_per_head) index of the output rows of a Linear whose output is laid out head by head."""
    return torch.arange(n_head * rows_per_head, device=device).view(n_head, rows_per_head)


class _LogitRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.record_max_logits = False
        self.max_logits: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------- attention
class CausalSelfAttention(_LogitRecorder):
    """MHA (n_kv_head = n_head) or GQA (n_kv_head < n_head, each key/value head shared by a group)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head = cfg.n_head, cfg.n_kv_head
        self.head_dim = cfg.n_embd // cfg.n_head
        self.wq = nn.Linear(cfg.n_embd, self.n_head * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_head * self.head_dim, cfg.n_embd, bias=False)
        self.rotary = Rotary(self.head_dim, cfg.block_size, cfg.rope_base)
        self.q_norm = nn.RMSNorm(self.head_dim) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(q), self.rotary(k)
        if self.n_kv_head != self.n_head:
            group = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        if self.record_max_logits:
            self.max_logits = causal_max_logits(q, k, 1.0 / math.sqrt(self.head_dim))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))

    def qk_clip_rules(self):
        """QK-Clip (Kimi K2, arXiv 2507.20534; docs/math.md §4): logit_h = q_h·k_h/√d, so scaling W_q's and W_k's
        rows of head h by √γ_h scales it by γ_h.

        A key head shared by several query heads (GQA) is left alone, and each query head takes the whole γ_h:
        clipping one head never touches its healthy neighbours."""
        from muonlab.optim.qkclip import HeadRows

        if self.q_norm is not None:
            raise ValueError("QK-Clip scales W_q/W_k rows, which QK-norm undoes; use qk_norm=False with QK-Clip")
        q_rows = head_rows(self.n_head, self.head_dim, self.wq.weight.device)
        if self.n_kv_head == self.n_head:
            k_rows = head_rows(self.n_head, self.head_dim, self.wk.weight.device)
            return [HeadRows(self.wq.weight, q_rows, 0.5), HeadRows(self.wk.weight, k_rows, 0.5)]
        return [HeadRows(self.wq.weight, q_rows, 1.0)]


class MultiHeadLatentAttention(_LogitRecorder):
    """MLA with decoupled RoPE (DeepSeek-V2): low-rank q and kv, per-head rotary q_R, one shared rotary k_R."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.d_nope, self.d_rope, self.d_v = cfg.nope_head_dim, cfg.rope_head_dim, cfg.v_head_dim
        H = self.n_head
        self.wq_down = nn.Linear(cfg.n_embd, cfg.q_lora_rank, bias=False)      # W_DQ
        self.q_norm = nn.RMSNorm(cfg.q_lora_rank)
        self.wq_c = nn.Linear(cfg.q_lora_rank, H * self.d_nope, bias=False)    # W_UQ  -> q_C
        self.wq_r = nn.Linear(cfg.q_lora_rank, H * self.d_rope, bias=False)    # W_QR  -> q_R (per head)
        self.wkv_down = nn.Linear(cfg.n_embd, cfg.kv_lora_rank, bias=False)    # W_DKV
        self.kv_norm = nn.RMSNorm(cfg.kv_lora_rank)
        self.wk_c = nn.Linear(cfg.kv_lora_rank, H * self.d_nope, bias=False)   # W_UK  -> k_C
        self.wv = nn.Linear(cfg.kv_lora_rank, H * self.d_v, bias=False)        # W_UV
        self.wk_r = nn.Linear(cfg.n_embd, self.d_rope, bias=False)             # W_KR  -> k_R (shared)
        self.wo = nn.Linear(H * self.d_v, cfg.n_embd, bias=False)
        self.rotary = Rotary(self.d_rope, cfg.block_size, cfg.rope_base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_head
        c_q = self.q_norm(self.wq_down(x))
        q_c = self.wq_c(c_q).view(B, T, H, self.d_nope).transpose(1, 2)
        q_r = self.rotary(self.wq_r(c_q).view(B, T, H, self.d_rope).transpose(1, 2))
        c_kv = self.kv_norm(self.wkv_down(x))
        k_c = self.wk_c(c_kv).view(B, T, H, self.d_nope).transpose(1, 2)
        v = self.wv(c_kv).view(B, T, H, self.d_v).transpose(1, 2)
        k_r = self.rotary(self.wk_r(x).view(B, T, 1, self.d_rope).transpose(1, 2))
        q = torch.cat((q_c, q_r), dim=-1)
        k = torch.cat((k_c, k_r.expand(B, H, T, self.d_rope)), dim=-1)
        if self.record_max_logits:
            self.max_logits = causal_max_logits(q, k, 1.0 / math.sqrt(self.d_nope + self.d_rope))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))

    def qk_clip_rules(self):
        """QK-Clip for MLA (Kimi K2, arXiv 2507.20534; docs/math.md §4): q_C and k_C rows of head h × √γ_h, q_R rows
        × γ_h, the shared k_R never touched, so that both terms of logit_h = q_C·k_C + q_R·k_R scale by exactly γ_h
        and no other head moves."""
        from muonlab.optim.qkclip import HeadRows

        dev = self.wq_c.weight.device
        return [
            HeadRows(self.wq_c.weight, head_rows(self.n_head, self.d_nope, dev), 0.5),
            HeadRows(self.wk_c.weight, head_rows(self.n_head, self.d_nope, dev), 0.5),
            HeadRows(self.wq_r.weight, head_rows(self.n_head, self.d_rope, dev), 1.0),
        ]


# ---------------------------------------------------------------------------------------------- GPT
class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.n_embd)
        self.attn = MultiHeadLatentAttention(cfg) if cfg.attention == "mla" else CausalSelfAttention(cfg)
        self.norm2 = nn.RMSNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Decoder-only transformer. ``forward(idx, targets=None) -> (logits, loss)``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        cfg = cfg.resolved()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = nn.RMSNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: residual output projections scaled by 1/√(2·n_layer)
        for name, p in self.named_parameters():
            if name.endswith("wo.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def attention_modules(self) -> list[nn.Module]:
        return [block.attn for block in self.blocks]

    def set_record_max_logits(self, on: bool) -> None:
        for attn in self.attention_modules():
            attn.record_max_logits = on

    def max_logits(self) -> torch.Tensor:
        """(n_layer, n_head) per-head max logits from the last recorded forward."""
        logits = [attn.max_logits for attn in self.attention_modules()]
        if any(m is None for m in logits):
            raise RuntimeError("no max logits recorded yet: call set_record_max_logits(True) and run a forward")
        return torch.stack(logits)

    def num_parameters(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss
