"""Blockwise 8-bit codes of a state tensor (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", arXiv
2110.02861), as :mod:`muonlab.optim.state_codec` stores ``"int8"`` state.

The tensor's rows (index 0; the rest flattened) are cut into blocks of :data:`BLOCK_SIZE` = 256 consecutive
elements; each block stores its absmax a = max|x| as fp32 and every element as one code c with x ≈ a·map[c], on a
*dynamic* map (:func:`dynamic_map`): signed for momenta and Adam's m, unsigned for Adam's v (whose 8th bit then adds
precision instead of a sign). Codes round to the nearest map level (deterministic); a positive v never rounds to 0.
"""

from __future__ import annotations

import functools
import math

import torch

BLOCK_SIZE = 256
# elements (whole rows, at least one) the encoder and decoder process at once: their temporaries are ≤ 3.5 fp32-sized
# tensors of one slice (14 MiB), whatever slice the bf16 rounding uses
SLICE_ELEMENTS = 1 << 20


def slice_elements(device: torch.device) -> int:
    """Elements the int8 codec processes at once on ``device`` (:data:`SLICE_ELEMENTS`, read at call time)."""
    return SLICE_ELEMENTS


@functools.lru_cache(maxsize=None)
def _dynamic_levels(signed: bool) -> tuple[float, ...]:
    magnitude_bits = 7 if signed else 8
    levels = {0.0}
    for decade in range(magnitude_bits):
        count = 2 ** (magnitude_bits - 1 - decade)
        for j in range(count):
            value = 10.0 ** -decade * (0.1 + 0.9 * (j + 1) / count)
            levels.add(value)
            if signed:
                levels.add(-value)
    return tuple(sorted(levels))


@functools.lru_cache(maxsize=None)
def _map_on(signed: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(levels, magnitude midpoints + [inf], bucket table, index of level 0) of a map on ``device``.

    The encoder finds the nearest level of a magnitude v ∈ [0, 1] without a search: v's fp32 bits ≫ 12 name a
    bucket of relative width ≤ 2⁻¹¹, and ``table[bucket]`` counts the midpoints below the bucket's lowest value.
    Adjacent midpoints are ≥ 0.9/128 apart relative to their value (far wider than a bucket), so at most one lies
    inside a bucket: code = table[bucket] + (v > midpoint[table[bucket]])."""
    levels64 = torch.tensor(_dynamic_levels(signed), dtype=torch.float64)
    magnitudes = levels64[levels64 >= 0]
    midpoints = ((magnitudes[1:] + magnitudes[:-1]) / 2).float()
    lows = (torch.arange(0, (0x3F800000 >> 12) + 1, dtype=torch.int32) << 12).view(torch.float32)
    table = torch.bucketize(lows, midpoints).to(torch.int16)
    midpoints = torch.cat([midpoints, torch.tensor([float("inf")])])
    zero = int((levels64 < 0).sum())
    return levels64.to(device, torch.float32), midpoints.to(device), table.to(device), zero


def dynamic_map(signed: bool, device=None) -> torch.Tensor:
    """The sorted levels of the dynamic map in [−1, 1] (signed) or [0, 1] (unsigned).

    Dettmers' dynamic tree layout: after the sign bit (signed maps), the magnitude's bits are split between a
    decade d (10^−d … 10^−d+1, d = 0 … b − 1) and a linear fraction with 2^(b−1−d) levels in it — many levels
    near the block's absmax, fewer and fewer down to 10^−(b−1) · 0.1·… . b = 7 magnitude bits for signed maps
    (255 levels: 0 and ±127), b = 8 for unsigned (256 levels: 0 and 255). 1.0 is a level, so each block's
    largest element is stored exactly."""
    return _map_on(bool(signed), torch.device(device or "cpu"))[0]


def blocks_per_row(shape) -> tuple[int, int]:
    """(rows, blocks per row) of a ≥ 2-D tensor of ``shape``: rows along dim 0, each the rest flattened and cut
    into ⌈row length / BLOCK_SIZE⌉ blocks (the last one shorter when the length is not a multiple)."""
    rows = int(shape[0])
    length = math.prod(int(s) for s in shape[1:])
    return rows, -(-length // BLOCK_SIZE) if length else 0


def quantizable(t: torch.Tensor) -> bool:
    """Whether int8 state applies to a tensor like ``t`` (≥ 2-D, not empty); other state stays fp32."""
    return t.dim() >= 2 and t.numel() > 0


def _padded_blocks(x: torch.Tensor, rows: int, nblocks: int) -> torch.Tensor:
    flat = x.reshape(rows, -1)
    pad = nblocks * BLOCK_SIZE - flat.shape[1]
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    return flat.reshape(rows, nblocks, BLOCK_SIZE)


def _row_slices(rows: int, row_length: int, device: torch.device):
    step = max(1, slice_elements(device) // max(row_length, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def quantize_blockwise(x: torch.Tensor, signed: bool, codes: torch.Tensor | None = None,
                       scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (≥ 2-D, floating) → (codes: uint8 shaped like x, scales: fp32 (rows, blocks per row)).

    Per block: a = max|x| (0 for an all-zero block, whose codes are then the map's 0), codes the nearest level
    of x/a on :func:`dynamic_map` (``signed`` False: x must be ≥ 0, and x > 0 never rounds to 0). Writes into
    ``codes``/``scales`` when given. Row slice by row slice (bounded temporaries)."""
    rows, nblocks = blocks_per_row(x.shape)
    length = x.numel() // max(rows, 1)
    _, midpoints, table, zero = _map_on(bool(signed), x.device)
    if codes is None:
        codes = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    if scales is None:
        scales = torch.empty((rows, nblocks), dtype=torch.float32, device=x.device)
    x_rows, code_rows = x.reshape(rows, length), codes.view(rows, length)
    for start, stop in _row_slices(rows, length, x.device):
        blocks = _padded_blocks(x_rows[start:stop].float(), stop - start, nblocks)
        code_rows[start:stop] = _encode_slice(blocks, signed, midpoints, table, zero, scales[start:stop])[:, :length]
    return codes, scales


def _encode_slice(blocks: torch.Tensor, signed: bool, midpoints: torch.Tensor, table: torch.Tensor, zero: int,
                  scales: torch.Tensor) -> torch.Tensor:
    """One slice of :func:`quantize_blockwise`: (rows, blocks, BLOCK_SIZE) fp32 → uint8 codes (rows, blocks ·
    BLOCK_SIZE), the absmax of each block written into ``scales``. A function of its own, so that its temporaries
    are freed before the next slice allocates its own. At most three 4-byte temporaries per element are alive at
    once (the magnitudes, the code indices, the midpoints looked up); the tables are read with int32 indices
    (``index_select``: indexing with ``[]`` would copy them to int64 first), and the signs are applied to 1-byte
    codes."""
    magnitude = blocks.abs()
    absmax = magnitude.amax(dim=-1)
    scales.copy_(absmax)
    # |x|/a ≤ 1 exactly (IEEE division is monotone); a zero block divides by 1
    magnitude.div_(torch.where(absmax > 0, absmax, 1.0).unsqueeze(-1))
    flat = magnitude.view(-1)
    below = table.index_select(0, flat.view(torch.int32) >> 12).int()
    below.add_(flat > midpoints.index_select(0, below))
    level = below.to(torch.uint8).view(blocks.shape)  # the magnitude's level: 0 … 127 (signed map), 0 … 255
    del below
    if signed:  # x ≥ 0: zero + level, x < 0: zero − level (both within 0 … 254)
        return torch.where(blocks < 0, zero - level, level + zero).view(blocks.shape[0], -1)
    # a positive second moment never becomes 0
    return torch.where(magnitude > 0, level.clamp(min=1), level).view(blocks.shape[0], -1)


def dequantize_blockwise(codes: torch.Tensor, scales: torch.Tensor, signed: bool,
                         out: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """codes, scales (from :func:`quantize_blockwise`) → a·map[c], shaped like ``codes`` (into ``out`` if given)."""
    rows, nblocks = blocks_per_row(codes.shape)
    length = codes.numel() // max(rows, 1)
    levels = _map_on(bool(signed), codes.device)[0]
    if out is None:
        out = torch.empty(codes.shape, dtype=dtype, device=codes.device)
    code_rows, out_rows = codes.reshape(rows, length), out.view(rows, length)
    for start, stop in _row_slices(rows, length, codes.device):
        # int32 indices through index_select (``levels[...]`` would copy them to int64 first)
        values = levels.index_select(0, code_rows[start:stop].reshape(-1).int()).view(stop - start, length)
        values = _padded_blocks(values, stop - start, nblocks)
        values.mul_(scales[start:stop].unsqueeze(-1))
        out_rows[start:stop] = values.reshape(stop - start, -1)[:, :length]
        del values  # before the next slice allocates its own
    return out


def max_quantization_error(signed: bool) -> float:
    """The largest |x/a − map(x/a)| over x/a ∈ [−1, 1] (or [0, 1]): half the widest gap between levels — the bound
    :func:`quantize_blockwise` guarantees on every element, relative to its block's absmax a."""
    levels = _dynamic_levels(bool(signed))
    return max(b - a for a, b in zip(levels, levels[1:])) / 2
