"""The Meta-Upscale contraction as one convolution, where a plan allows it (PyTorch; inference and training).

When every input position of an axis hosts the same output offsets (integer scales; r = p/2 with blocks of two
positions: x1.5, x2.5, x3.5), the stage is a sub-pixel convolution: one ``conv2d`` of the features with the
K_r*K_c*3 filters of the slots (:func:`metasr.runtime.feeds.axis_hints` gives one group per axis), followed by
a depth-to-space gather. Blocks of two positions use ``pixel_unshuffle`` and a 2x2 kernel over the space-to-depth
features, each slot's 3x3 filter placed at its row and column within the 4x4 window of its block (the MetaUpscale
body's conv path, metasr/export/metaupscale_body.py, does the same with standard ONNX ops).

    features (N, C, h, w) -> box (N, C, (nb+kt-1)*s, ...) -> pixel_unshuffle(s) (N, s*s*C, nb+kt-1, ...)
    -> conv2d with (3*K_r*K_c, s*s*C, kt, kt) -> (N, 3*K_r*K_c, nb_r, nb_c) -> gather (N, 3, H, W)

with s the block size, kt = 3 (s = 1) or 2 (s = 2), nb the blocks per axis. No patch matrix exists in memory; the
arithmetic is the exact work plus the zero taps of the 4x4 windows (s = 2: 16/9) and the slots a block hosts
only in part (the last block).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from metasr.runtime.feeds import axis_hints, slot_rows
from metasr.runtime.projection import AxisPlan, ProjectionPlan

__all__ = ["ConvLayout", "conv_layout", "conv_upscale"]


class ConvLayout:
    """One axis of a plan the conv path can compute: block size, block of each output, slot of each output, and
    per slot its offset index and row within the block."""

    def __init__(self, axis: AxisPlan) -> None:
        groups, slots, pick = axis_hints(axis.src, axis.offset_index)
        self.groups = groups.shape[0]
        self.block = groups.shape[2]
        k = slots.shape[1]
        first = axis.src[groups[0, :, 0]]  # (L,) first input row of every member block
        self.origin = int(first.min())
        self.blocks = int(first.max() - self.origin) // self.block + 1
        self.out_block = (first[(pick // k) % groups.shape[1]] - self.origin) // self.block  # (n,)
        self.out_slot = pick % k  # (n,)
        self.offsets = axis.offset_index[slots[0]]  # (K,)
        self.rows = slot_rows(axis.src, groups, slots, pick)[0]  # (K,) row of each slot within its block


def conv_layout(plan: ProjectionPlan) -> tuple[ConvLayout, ConvLayout] | None:
    """The two axes' layouts when the plan has one group per axis and equal block sizes of 1 or 2, else None."""
    rows, cols = ConvLayout(plan.rows), ConvLayout(plan.cols)
    if rows.groups != 1 or cols.groups != 1 or rows.block != cols.block or rows.block > 2:
        return None
    return rows, cols


def _placement(layout: ConvLayout, taps: int, like: torch.Tensor) -> torch.Tensor:
    """(K, 3, taps) one-hot: kernel tap t of slot k lies at window row rows[k] + t."""
    tap_row = torch.from_numpy(layout.rows[:, None] + np.arange(3)).to(like.device)  # (K, 3)
    return (tap_row[..., None] == torch.arange(taps, device=like.device)).to(like.dtype)


def conv_upscale(features: torch.Tensor, table: torch.Tensor, layouts: tuple[ConvLayout, ConvLayout]) -> torch.Tensor:
    """features (N, C, h, w), table (P_r, P_c, 9C, 3) ordered (ky, kx, c) -> (N, 3, H, W) (see the module)."""
    rows, cols = layouts
    n, c, h, w = features.shape
    s = rows.block
    kt = 3 if s == 1 else 2
    taps = kt * s
    r_off, c_off = torch.from_numpy(rows.offsets), torch.from_numpy(cols.offsets)
    filters = table[r_off[:, None], c_off[None, :]].view(r_off.numel(), c_off.numel(), 3, 3, c, 3)  # (Kr,Kc,ky,kx,C,o)
    placed = torch.einsum(
        "ayt,bxu,abyxco->abtuco", _placement(rows, taps, table), _placement(cols, taps, table), filters
    )  # (K_r, K_c, T, T, C, o)
    k_r, k_c = placed.shape[:2]
    weight = placed.reshape(k_r, k_c, kt, s, kt, s, c, 3).permute(7, 0, 1, 6, 3, 5, 2, 4)  # (o,kr,kc,c,sy,sx,ty,tx)
    weight = weight.reshape(3 * k_r * k_c, c * s * s, kt, kt)  # pixel_unshuffle's channel order (c, sy, sx)
    box_h, box_w = (rows.blocks + kt - 1) * s, (cols.blocks + kt - 1) * s
    top, left = 1 - rows.origin, 1 - cols.origin  # the box starts one row before the first block (negative: crop)
    box = F.pad(features, (left, box_w - w - left, top, box_h - h - top))
    x = F.pixel_unshuffle(box, s) if s > 1 else box
    y = F.conv2d(x, weight).view(n, 3, k_r, k_c, rows.blocks, cols.blocks)
    ri = torch.from_numpy(rows.out_slot)[:, None], torch.from_numpy(rows.out_block)[:, None]
    ci = torch.from_numpy(cols.out_slot)[None, :], torch.from_numpy(cols.out_block)[None, :]
    return y[:, :, ri[0], ci[0], ri[1], ci[1]]  # (N, 3, H, W)
