"""The filter-stationary ``MetaUpscale`` kernel (Triton; imports Triton: load it lazily). Behind a flag: not the
default until measured on a GPU (``KernelConfig(layout="filter")``, or ``METASR_KERNEL_LAYOUT=filter`` for the
TensorRT plugin).

A program owns one (row group, column group) pair of the grouping hints (``metasr.runtime.feeds``) and a tile of
BLOCK_Y x BLOCK_X member blocks of that pair. It loops over the pair's K_r x K_c slot pairs; each slot pair is one
offset pair, i.e. one filter, loaded once per program and used by all of the tile's pixels (the per-pixel kernel
in ``source`` reads a filter per output pixel: at x3.3 every pixel of a block has its own). Per slot pair the
tile's pixels are the members' source pixels shifted by the slot's row and column within the block; their 3x3
neighbourhoods are contracted with the filter as (pixels x BLOCK_C) @ (BLOCK_C x 16) products (the 3 outputs
padded to the 16 columns ``tl.dot`` needs; float32 inputs with IEEE products, float16 on tensor cores), channel
chunk by channel chunk. Each result goes to the output position whose pick names (group, member, slot): found by
searching ``*_pick`` in a window of WIN positions around the member's representative output position (a block's
outputs are consecutive), so no inverse map is needed and the kernel reads only the op's inputs.

Parameters: the 12 op inputs, the 15 int32 scalars of :data:`metasr.kernels.spec.FILTER_SCALAR_PARAMS`, the output.
Grid: ``(cdiv(L_c, BLOCK_X), cdiv(L_r, BLOCK_Y), N * G_r * G_c)``.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["interpreted", "jit", "meta_upscale_filter_kernel"]

SCALARS = ("C", "h", "w", "H", "W", "P_r", "P_c", "G_r", "L_r", "K_r", "S_r", "G_c", "L_c", "K_c", "S_c")
_max_combine = tl.standard._elementwise_max


def meta_upscale_filter_kernel(
    feat_ptr,
    weight_ptr,
    row_src_ptr,
    row_idx_ptr,
    col_src_ptr,
    col_idx_ptr,
    row_groups_ptr,
    row_slots_ptr,
    row_pick_ptr,
    col_groups_ptr,
    col_slots_ptr,
    col_pick_ptr,
    C,
    h,
    w,
    H,
    W,
    P_r,
    P_c,
    G_r,
    L_r,
    K_r,
    S_r,
    G_c,
    L_c,
    K_c,
    S_c,
    out_ptr,
    BLOCK_Y: tl.constexpr,
    BLOCK_X: tl.constexpr,
    BLOCK_C: tl.constexpr,
    WIN: tl.constexpr,
    IEEE: tl.constexpr,
):
    BLOCK_P: tl.constexpr = BLOCK_Y * BLOCK_X
    pz = tl.program_id(2).to(tl.int64)
    n = pz // (G_r * G_c)
    a = (pz // G_c) % G_r
    b = pz % G_c
    p = tl.arange(0, BLOCK_P)
    ly = tl.program_id(1) * BLOCK_Y + p // BLOCK_X  # (P,) member block (rows) of each pixel
    lx = tl.program_id(0) * BLOCK_X + p % BLOCK_X
    member = (ly < L_r) & (lx < L_c)
    ly, lx = tl.minimum(ly, L_r - 1), tl.minimum(lx, L_c - 1)
    # each member block's representative output row / column and its first input row / column
    g_r = tl.minimum(tl.maximum(tl.load(row_groups_ptr + (a * L_r + ly) * S_r), 0), H - 1)  # (P,) int64
    g_c = tl.minimum(tl.maximum(tl.load(col_groups_ptr + (b * L_c + lx) * S_c), 0), W - 1)
    y0 = tl.load(row_src_ptr + g_r)
    x0 = tl.load(col_src_ptr + g_c)
    t = tl.arange(0, WIN)[None, :]  # (1, WIN) search window around the representative
    hw = h.to(tl.int64) * w
    feat = feat_ptr + n * C * hw
    cc = tl.arange(0, BLOCK_C)
    oo = tl.arange(0, 16)
    plane = H.to(tl.int64) * W
    ty = out_ptr.dtype.element_ty
    for kr in range(K_r):
        s_r = tl.minimum(tl.maximum(tl.load(row_slots_ptr + a * K_r + kr), 0), H - 1)  # scalar: slot's output row
        off_r = tl.minimum(tl.maximum(tl.load(row_idx_ptr + s_r), 0), P_r - 1)
        s_pick = tl.load(row_pick_ptr + s_r)  # the slot output's own member block: its row within that block
        s_member = tl.minimum(tl.maximum((s_pick // K_r), 0), G_r * L_r - 1)
        d_r = tl.load(row_src_ptr + s_r) - tl.load(row_src_ptr + tl.load(row_groups_ptr + s_member * S_r))
        cand = g_r[:, None] - WIN // 2 + t  # (P, WIN) output rows near the member's representative
        ok = (cand >= 0) & (cand < H)
        hit = ok & (tl.load(row_pick_ptr + cand, mask=ok, other=-1) == ((a * L_r + ly) * K_r + kr)[:, None])
        dest_r = tl.reduce(tl.where(hit, cand, -1), 1, _max_combine)  # (P,) output row, or -1: not hosted
        y = y0 + d_r
        for kc in range(K_c):
            s_c = tl.minimum(tl.maximum(tl.load(col_slots_ptr + b * K_c + kc), 0), W - 1)
            off_c = tl.minimum(tl.maximum(tl.load(col_idx_ptr + s_c), 0), P_c - 1)
            sc_pick = tl.load(col_pick_ptr + s_c)
            sc_member = tl.minimum(tl.maximum((sc_pick // K_c), 0), G_c * L_c - 1)
            d_c = tl.load(col_src_ptr + s_c) - tl.load(col_src_ptr + tl.load(col_groups_ptr + sc_member * S_c))
            cand_c = g_c[:, None] - WIN // 2 + t
            ok_c = (cand_c >= 0) & (cand_c < W)
            want = ((b * L_c + lx) * K_c + kc)[:, None]
            hit_c = ok_c & (tl.load(col_pick_ptr + cand_c, mask=ok_c, other=-1) == want)
            dest_c = tl.reduce(tl.where(hit_c, cand_c, -1), 1, _max_combine)
            x = x0 + d_c
            filt = weight_ptr + (off_r * P_c + off_c) * (27 * C)  # this slot pair's filter, (ky, kx, c, o)
            acc = tl.full((BLOCK_P, 16), 0.0, tl.float32)
            for ky in tl.static_range(3):
                yy = y + (ky - 1)
                row_ok = member & (yy >= 0) & (yy < h)
                for kx in tl.static_range(3):
                    xx = x + (kx - 1)
                    tap_ok = row_ok & (xx >= 0) & (xx < w)
                    src = feat + (yy * w + xx)
                    for c0 in range(0, C, BLOCK_C):
                        c = c0 + cc
                        f = tl.load(src[:, None] + c[None, :] * hw, mask=tap_ok[:, None] & (c < C)[None, :], other=0.0)
                        wk = filt + ((ky * 3 + kx) * C + c)[:, None] * 3 + oo[None, :]
                        wt = tl.load(wk, mask=(c < C)[:, None] & (oo < 3)[None, :], other=0.0)
                        if IEEE:
                            acc += tl.dot(f.to(tl.float32), wt.to(tl.float32), input_precision="ieee")
                        else:
                            acc += tl.dot(f, wt)
            keep = member & (dest_r >= 0) & (dest_c >= 0)
            dst = out_ptr + (n * 3 * H + tl.maximum(dest_r, 0)) * W + tl.maximum(dest_c, 0)  # out[n, 0, i, j]
            tl.store(dst[:, None] + oo[None, :] * plane, acc.to(ty), mask=keep[:, None] & (oo < 3)[None, :])


def jit() -> triton.runtime.JITFunction:
    """The kernel as a Triton JIT function (GPU launch, PTX compilation)."""
    return triton.runtime.jit.JITFunction(meta_upscale_filter_kernel, do_not_specialize=list(SCALARS))


def interpreted() -> object:
    """The kernel under Triton's interpreter (CPU tensors; needs ``TRITON_INTERPRET=1`` semantics)."""
    from triton.runtime.interpreter import InterpretedFunction

    return InterpretedFunction(meta_upscale_filter_kernel)
