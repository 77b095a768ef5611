"""bf16 stochastic rounding from counter-based random bits (:mod:`muonlab.optim.state_codec` stores state with it).

The random bits come from a hash of (key, element index) (:func:`random_bits16`), where the key mixes the
optimizer's rounding seed, the parameter's index, the state slot and the step count (:func:`rounding_key`). No
generator state is stored, the bits do not depend on how the tensor is sharded (the element index is global), and a
resumed run draws exactly the bits of the run that never stopped. Same seed, same step → same bits, on any device.
"""

from __future__ import annotations

import torch

# elements the encoders (this rounding, the int8 codes) process at once: bounds their int64/fp32 temporaries
# (≤ 8 MiB each)
SLICE_ELEMENTS = 1 << 20


def slice_elements(device: torch.device) -> int:
    """Elements an encoder processes at once on ``device`` (:data:`SLICE_ELEMENTS`, read at call time)."""
    return SLICE_ELEMENTS


_MASK32 = 0xFFFFFFFF
# odd multipliers below 2³¹, so that a 32-bit value times one stays below 2⁶³ (no int64 overflow)
_MUL1, _MUL2 = 0x7FEB352D, 0x68E31DA5
_WEYL = 0x2C1B3C6D  # odd: i ↦ i·_WEYL is a bijection mod 2³²


def _mix32_int(x: int) -> int:
    """A 32-bit integer hash (xor-shift-multiply avalanche) of a Python int, for keys."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * _MUL1) & _MASK32
    x ^= x >> 15
    x = (x * _MUL2) & _MASK32
    x ^= x >> 16
    return x


def rounding_key(seed: int, *ids: int) -> int:
    """A 32-bit key from a seed and stream ids (parameter index, state slot, step): each folded in and re-hashed,
    so that keys of nearby ids are unrelated."""
    key = _mix32_int(seed ^ 0x9E3779B9)
    for value in ids:
        key = _mix32_int(key ^ _mix32_int(value + 0x632BE5AB))
    return key


def _as_int32(value: int) -> int:
    value &= _MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


def random_bits16(numel: int, key: int, offset: int = 0, device=None) -> torch.Tensor:
    """16 uniform random bits (int32 in [0, 2¹⁶)) for each element index offset … offset + numel − 1 under ``key``:
    the top half of a 32-bit hash of (index, key). A pure function of its arguments.

    The hash runs in int32 with wrapping multiplies (the cheapest integer ops on every device): h = i·A + key,
    then h ^= h ≫ 15, h ·= B, h ^= h ≫ 16 (logical shifts, i.e. arithmetic ones masked). Index i·A alone is a
    Weyl sequence (evenly spread bits within a tensor); the key, a hash of the step, moves every element to an
    unrelated point each step; the xor-shift-multiply mixes the top bits that are used."""
    if offset + numel <= 1 << 31:
        h = torch.arange(offset, offset + numel, dtype=torch.int32, device=device)
    else:  # indices past 2³¹: fold the high word in, then wrap to int32
        wide = torch.arange(offset, offset + numel, dtype=torch.int64, device=device)
        wide = (wide & _MASK32) ^ (((wide >> 32) * _MUL2) & _MASK32)
        h = torch.where(wide >= 1 << 31, wide - (1 << 32), wide).to(torch.int32)
    h.mul_(_WEYL).add_(_as_int32(key))
    h.bitwise_xor_((h >> 15).bitwise_and_(0x1FFFF))
    h.mul_(_as_int32(_MUL1))
    h.bitwise_xor_((h >> 16).bitwise_and_(0xFFFF))
    return (h >> 16).bitwise_and_(0xFFFF)


def stochastic_round_bf16(x: torch.Tensor, key: int, offset: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 → bf16 with stochastic rounding: adding 16 random bits to the fp32 bit pattern and truncating rounds
    |x| up with probability (low 16 bits)/2¹⁶, i.e. exactly its distance to the bf16 value below — unbiased.
    Values already in bf16 are unchanged; NaN stays NaN, ±Inf stays ±Inf. ``offset``: the global index of x's
    first element (a shard's), so that a sharded tensor rounds as the whole one would. Works slice by slice."""
    if x.dtype != torch.float32:
        x = x.float()
    flat = x.reshape(-1)
    if out is None:
        out = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device)
    out_flat = out.view(-1)
    size = slice_elements(x.device)
    for start in range(0, flat.numel(), size):
        part = flat[start:start + size]
        # int32 bits + < 2¹⁶ cannot overflow except from NaN patterns (0x7FFF….), which are put back below
        bits = random_bits16(part.numel(), key, offset + start, part.device).add_(part.view(torch.int32))
        rounded = (bits >> 16).to(torch.int16).view(torch.bfloat16)  # the signed top half: sign, exponent, 7 bits
        out_flat[start:start + size] = torch.where(part.isnan(), part.to(torch.bfloat16), rounded)
    return out
