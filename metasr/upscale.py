"""The Meta-Upscale contraction, computed by groups of input pixels that share their filters.

Plans with one group per axis (integer scales, r = p/2) run as one convolution instead
(:mod:`metasr.upscale_conv`); this module's grouped path serves every other scale (and ``conv=False``).

Every output pixel (i, j) is the contraction of its source pixel's zero-padded 3x3 neighbourhood in the
feature map F (N, C, h, w) with the (9*C x 3) filter of its offset pair (row offset of i, column offset of
j). An input row hosts the output rows that project onto it; the tuple of those rows' offset indices is
the row's *signature* (likewise for columns). All input pixels whose row and column signatures agree need
exactly the same filters, so for each row signature one batched matrix product serves every column
signature at once:

    patches (G_c, N*m*X, 9C)  @  filters (G_c, 9C, K_r*K_c*3)  ->  (G_c, N*m*X, K_r*K_c*3)

with m input rows of that signature, X input columns per column signature (padded to the largest group)
and K_r x K_c output pixels per input pixel. Each input pixel's neighbourhood is read once per row group,
nothing of size (output pixels x 9C) or ceil(r)^2 copies of F is ever built, and the arithmetic is the
exact work plus the column padding (K_c = the most output columns any input column hosts). For
r = p/q there are about q signatures per axis, so the loop is short. The output is tiled: a tile's
result is exactly the same region of the untiled result (the groups are formed inside the tile).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from metasr.runtime.projection import ProjectionPlan
from metasr.upscale_conv import conv_layout, conv_upscale

__all__ = ["DEFAULT_TILE", "meta_upscale"]

DEFAULT_TILE = 512  # output tile side (memory: the output tile and the index arrays scale with it)
_CHUNK_ELEMENTS = 1 << 20  # patches gathered per matrix product (4 MiB float32): keeps them cache-resident


@dataclass(frozen=True)
class AxisGroup:
    """Input positions of one axis sharing a signature: ``inputs`` (m,), ``outputs`` (m, K), ``offsets`` (K,)."""

    inputs: np.ndarray
    outputs: np.ndarray
    offsets: np.ndarray


def axis_groups(src: np.ndarray, offset_index: np.ndarray) -> list[AxisGroup]:
    """Group the input positions hosting ``src`` (sorted, (n,)) by the offset indices they host.

    Output positions are local: 0..n-1 in the order of ``src``.
    """
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
    counts = np.diff(np.r_[starts, src.size])
    by_signature: dict[tuple[int, ...], list[int]] = {}
    for s, c in zip(starts.tolist(), counts.tolist(), strict=True):
        by_signature.setdefault(tuple(offset_index[s : s + c].tolist()), []).append(s)
    groups = []
    for signature, run_starts in by_signature.items():
        first = np.asarray(run_starts, dtype=np.int64)
        groups.append(
            AxisGroup(
                inputs=src[first],
                outputs=first[:, None] + np.arange(len(signature)),  # (m, K)
                offsets=np.asarray(signature, dtype=np.int64),
            )
        )
    return groups


def padded_groups(groups: list[AxisGroup], dummy: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack groups into rectangular arrays, padding with input 0 whose outputs go to ``dummy``.

    Returns ``inputs`` (G, X), ``outputs`` (G, X, K) and ``offsets`` (G, K) as int64.
    """
    n_groups = len(groups)
    x_max = max(g.inputs.size for g in groups)
    k_max = max(g.offsets.size for g in groups)
    inputs = np.zeros((n_groups, x_max), dtype=np.int64)
    outputs = np.full((n_groups, x_max, k_max), dummy, dtype=np.int64)
    offsets = np.zeros((n_groups, k_max), dtype=np.int64)
    for t, g in enumerate(groups):
        m, k = g.outputs.shape
        inputs[t, :m] = g.inputs
        outputs[t, :m, :k] = g.outputs
        offsets[t, :k] = g.offsets
    return inputs, outputs, offsets


def _row_windows(fp: torch.Tensor) -> torch.Tensor:
    """Overlapping view of padded channels-last ``fp`` (N, H, W, C): row p is the 3*C floats of the
    pixels p, p+1, p+2 in flat (n, y, x) order, i.e. one kernel row (kx = 0..2, c) of a neighbourhood.

    Returns a (N*H*W - 2, 3C) view (no copy).
    """
    c = fp.shape[-1]
    return fp.reshape(-1).as_strided((fp.numel() // c - 2, 3 * c), (c, 1))


def _contract_tile(
    fp: torch.Tensor,
    table: torch.Tensor,
    row_src: np.ndarray,
    row_off: np.ndarray,
    col_src: np.ndarray,
    col_off: np.ndarray,
) -> torch.Tensor:
    """One output tile. ``fp`` (N, h+2, w+2, C) zero-padded channels-last features; ``table`` (Pr, Pc, 9C, 3).

    Returns (N, tile_h, tile_w, 3).
    """
    n, _, _, c = fp.shape
    dev = fp.device
    tile_h, tile_w = row_src.size, col_src.size
    hp, wp = fp.shape[1:3]
    windows = _row_windows(fp)  # (N*hp*wp - 2, 3C)
    col_in, col_out, col_offs = padded_groups(axis_groups(col_src, col_off), dummy=tile_w)
    n_cg, x_max, kc = col_out.shape
    batch = np.arange(n).reshape(1, n, 1, 1)
    col_offs_t = torch.from_numpy(col_offs).to(dev)
    out = fp.new_empty((n * tile_h * (tile_w + 1), 3))  # column tile_w collects the padding's writes
    taps = np.arange(3).reshape(1, 1, 1, 1, 3)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (n * n_cg * x_max * 9 * c))
    for group in axis_groups(row_src, row_off):
        for k0 in range(0, group.inputs.size, rows_per_chunk):
            inputs = group.inputs[k0 : k0 + rows_per_chunk]
            outputs = group.outputs[k0 : k0 + rows_per_chunk]
            m, kr = outputs.shape
            # flat index of the first pixel of kernel row ky for every (column group, image, input row,
            # input column, ky): (G_c, N, m, X, 3); padded coordinates: source (y, x) starts at (y+ky, x)
            rows = inputs.reshape(1, 1, m, 1, 1) + taps
            src_idx = (batch[..., None] * hp + rows) * wp + col_in.reshape(n_cg, 1, 1, x_max, 1)
            patches = windows.index_select(0, torch.from_numpy(src_idx.reshape(-1)).to(dev))
            patches = patches.view(n_cg, n * m * x_max, 9 * c)  # (G_c, N m X, ky kx C)
            filters = table[torch.from_numpy(group.offsets).to(dev)[:, None, None], col_offs_t[None]]
            # (K_r, G_c, K_c, 9C, 3) -> (G_c, 9C, K_r, K_c, 3)
            filters = filters.permute(1, 3, 0, 2, 4).reshape(n_cg, 9 * c, kr * kc * 3)
            res = torch.bmm(patches, filters)  # (G_c, N*m*X, K_r*K_c*3)
            # flat output index of (G_c, N, m, X, K_r, K_c)
            dst_idx = (batch.reshape(1, n, 1, 1, 1, 1) * tile_h + outputs.reshape(1, 1, m, 1, kr, 1)) * (
                tile_w + 1
            ) + col_out.reshape(n_cg, 1, 1, x_max, 1, kc)
            out.index_copy_(0, torch.from_numpy(dst_idx.reshape(-1)).to(dev), res.view(-1, 3))
    return out.view(n, tile_h, tile_w + 1, 3)[:, :, :tile_w]


def meta_upscale(
    features: torch.Tensor,
    table: torch.Tensor,
    plan: ProjectionPlan,
    tile: int | None = DEFAULT_TILE,
    conv: bool = True,
) -> torch.Tensor:
    """Contract ``features`` (N, C, h, w) with the filter ``table`` (P_r, P_c, 9C, 3) along ``plan``.

    Returns (N, 3, out_h, out_w) in the features' dtype and device (no mean added, no clamping).
    ``tile`` is the output tile side (None: one tile); any tile size gives the same result. ``conv``: plans with
    one group per axis (integer scales; r = p/2) run as one convolution (:mod:`metasr.upscale_conv`: 3-12x
    faster on the CPU, measured; in one piece, ``tile`` does not apply), the others by groups.
    """
    n, c, h, w = features.shape
    if (h, w) != (plan.in_h, plan.in_w):
        raise ValueError(f"plan is for a {plan.in_h}x{plan.in_w} input, features are {h}x{w}")
    if table.shape != (plan.rows.offsets.size, plan.cols.offsets.size, 9 * c, 3):
        raise ValueError(
            f"filter table has shape {tuple(table.shape)}, plan and features need "
            f"{(plan.rows.offsets.size, plan.cols.offsets.size, 9 * c, 3)}"
        )
    layouts = conv_layout(plan) if conv else None
    if layouts is not None:
        return conv_upscale(features, table, layouts)
    fp = F.pad(features, (1, 1, 1, 1)).permute(0, 2, 3, 1).contiguous()  # (N, h+2, w+2, C)
    out_h, out_w = plan.out_size
    step_h = out_h if tile is None else max(1, tile)
    step_w = out_w if tile is None else max(1, tile)
    out = features.new_empty((n, out_h, out_w, 3))
    rows, cols = plan.rows, plan.cols
    for i0 in range(0, out_h, step_h):
        rs = slice(i0, min(i0 + step_h, out_h))
        for j0 in range(0, out_w, step_w):
            cs = slice(j0, min(j0 + step_w, out_w))
            out[:, rs, cs] = _contract_tile(
                fp, table, rows.src[rs], rows.offset_index[rs], cols.src[cs], cols.offset_index[cs]
            )
    return out.permute(0, 3, 1, 2).contiguous()  # (N, 3, out_h, out_w)
