"""The Triton source of the ``MetaUpscale`` kernel (imports Triton: load it lazily).

One program computes a ``BLOCK_H x BLOCK_W`` block of output pixels of one image. Per pixel it gathers the
zero-padded 3x3 neighbourhood of its source pixel straight from the NCHW features and contracts it with its
offset pair's (ky, kx, c, out) filter, channel chunk by channel chunk::

    out[n, o, i, j] = sum_{ky, kx, c} F[n, c, row_src[i] + ky - 1, col_src[j] + kx - 1]
                                      * weights[row_idx[i], col_idx[j], ky, kx, c, o]

Work tiles are (BLOCK_P, BLOCK_C): a warp spans 32 / BLOCK_C consecutive output pixels x BLOCK_C channels.
What one load instruction costs is the number of distinct cache lines its warp touches: for the filters,
one per distinct offset pair among the warp's pixels (at x3.3 every column has its own pair); for the NCHW
features, one per channel (neighbouring pixels share source pixels and lines). Splitting the warp between
pixels and channels balances the two (a warp of 32 pixels made every filter load touch 32 lines at x3.3,
measured 7x slower there than at x4). Products accumulate in float32 as (BLOCK_P, BLOCK_C) partial sums per
output channel, reduced over channels once at the end. Nothing of size (pixels x 9C) exists anywhere, and
the grouping hints (parameters 6-11) are never read.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["interpreted", "jit", "meta_upscale_kernel"]

SCALARS = ("C", "h", "w", "H", "W", "P_r", "P_c")
# tl.sum's own combine function: tl.reduce with it is a plain sum when compiled, and the interpreter maps it
# to numpy.sum even when Triton was imported before TRITON_INTERPRET=1 was set (tl.sum itself is @jit code)
_sum_combine = tl.standard._sum_combine


def meta_upscale_kernel(
    feat_ptr,
    weight_ptr,
    row_src_ptr,
    row_idx_ptr,
    col_src_ptr,
    col_idx_ptr,
    hint_row_groups,
    hint_row_slots,
    hint_row_pick,
    hint_col_groups,
    hint_col_slots,
    hint_col_pick,
    C,
    h,
    w,
    H,
    W,
    P_r,
    P_c,
    out_ptr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    BLOCK_P: tl.constexpr = BLOCK_H * BLOCK_W
    n = tl.program_id(2).to(tl.int64)
    p = tl.arange(0, BLOCK_P)
    i = tl.program_id(1) * BLOCK_H + p // BLOCK_W  # (P,) output row
    j = tl.program_id(0) * BLOCK_W + p % BLOCK_W  # (P,) output column
    valid = (i < H) & (j < W)
    # indices are clamped into range: invalid index vectors (e.g. trtexec's random inputs) give a wrong image,
    # never a read outside the buffers (the torch entry point refuses them before launching)
    ys = tl.minimum(tl.maximum(tl.load(row_src_ptr + i, mask=valid, other=0), 0), h - 1)  # int64
    xs = tl.minimum(tl.maximum(tl.load(col_src_ptr + j, mask=valid, other=0), 0), w - 1)
    ri = tl.minimum(tl.maximum(tl.load(row_idx_ptr + i, mask=valid, other=0), 0), P_r - 1)
    ci = tl.minimum(tl.maximum(tl.load(col_idx_ptr + j, mask=valid, other=0), 0), P_c - 1)
    pair = ri * P_c + ci
    hw = h.to(tl.int64) * w
    feat = feat_ptr + n * C * hw
    filt = weight_ptr + pair * (27 * C)  # (P,) this pixel's filter, (ky, kx, c, o)
    cc = tl.arange(0, BLOCK_C)[None, :]  # (1, BLOCK_C), built once in the 2-D layout (no per-step conversion)
    # (P, BLOCK_C) partial sums per output channel; tl.full, not tl.zeros: core builtins run in the
    # interpreter whatever order Triton and TRITON_INTERPRET were set up in (the standard library is @jit)
    acc0 = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    acc1 = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    acc2 = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for ky in tl.static_range(3):
        y = ys + (ky - 1)
        row_ok = valid & (y >= 0) & (y < h)
        for kx in tl.static_range(3):
            x = xs + (kx - 1)
            ok = row_ok & (x >= 0) & (x < w)  # (P,) zero padding: out-of-image taps read nothing
            src = feat + (y * w + x)  # (P,) feature of channel 0 at this tap
            tap = filt + (ky * 3 + kx) * C * 3  # (P,) weights[pair, ky, kx, 0, 0]
            ok2, src2, tap2 = ok[:, None], src[:, None], tap[:, None]  # (P, 1): converted once per tap
            for c0 in range(0, C, BLOCK_C):
                c = c0 + cc  # (1, BLOCK_C)
                m = ok2 & (c < C)  # (P, BLOCK_C)
                f = tl.load(src2 + c * hw, mask=m, other=0.0).to(tl.float32)
                wc = tap2 + c * 3  # (P, BLOCK_C) -> weights[pair, ky, kx, c, 0]
                acc0 += f * tl.load(wc, mask=m, other=0.0).to(tl.float32)
                acc1 += f * tl.load(wc + 1, mask=m, other=0.0).to(tl.float32)
                acc2 += f * tl.load(wc + 2, mask=m, other=0.0).to(tl.float32)
    dst = out_ptr + (n * 3 * H + i) * W + j  # (P,) out[n, 0, i, j]; channel o adds o*H*W
    plane = H.to(tl.int64) * W
    ty = out_ptr.dtype.element_ty
    tl.store(dst, tl.reduce(acc0, 1, _sum_combine).to(ty), mask=valid)
    tl.store(dst + plane, tl.reduce(acc1, 1, _sum_combine).to(ty), mask=valid)
    tl.store(dst + 2 * plane, tl.reduce(acc2, 1, _sum_combine).to(ty), mask=valid)


def jit() -> triton.runtime.JITFunction:
    """The kernel as a Triton JIT function (GPU launch, PTX compilation)."""
    # scalars equal to 1 (a one-pixel axis) must not become compile-time constants: the kernel calls .to()
    # on them, and the AOT plugin passes every scalar at run time
    return triton.runtime.jit.JITFunction(meta_upscale_kernel, do_not_specialize=list(SCALARS))


def interpreted() -> object:
    """The kernel under Triton's interpreter (CPU tensors; needs ``TRITON_INTERPRET=1`` semantics)."""
    from triton.runtime.interpreter import InterpretedFunction

    return InterpretedFunction(meta_upscale_kernel)
