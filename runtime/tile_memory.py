"""What one upscale call holds in memory, by the path it takes (numpy only): the tiler's budget unit.

:func:`tile_bytes` counts every buffer of the ``MetaUpscale`` body for a tile's (windowed) feeds, an upper bound
checked against measured peaks (``benchmarks/ort_upscale_memory.py`` per call, ``benchmarks/upscale_plan_memory.py``
over a whole tiled run); :func:`full_table_fits` says whether a plan's filter table is small enough to be fed whole
to every tile. :mod:`metasr.runtime.tiling` plans with them (and re-exports them).
"""

from __future__ import annotations

import numpy as np
from metasr.runtime.feeds import conv_path

__all__ = ["FULL_TABLE_BYTES", "full_table_fits", "tile_bytes"]


# a backend that computes a plan's filter table once (``OrtBackend.filters``) is fed the whole table in every
# tile where it is at most this (and 1/8 of the budget): x3.9 on 3000 x 4000 has 7290 offset pairs, 25 MiB at
# C = 32; scales whose offsets hardly repeat (x3.19: 110k pairs at 1000 x 1500) keep per-tile tables
FULL_TABLE_BYTES = 32 << 20


def full_table_fits(feeds: dict[str, np.ndarray], channels: int, budget_bytes: float) -> bool:
    """Whether the plan's filter table ((P_r, P_c, 27C) float32 for its ``feeds``) is small enough to be fed
    whole to every tile (``window_feeds(..., compact_offsets=False)``): see :data:`FULL_TABLE_BYTES`."""
    pairs = feeds["row_offsets"].size * feeds["col_offsets"].size
    return pairs * 27 * channels * 4 <= min(FULL_TABLE_BYTES, budget_bytes / 8)


def tile_bytes(
    feeds: dict[str, np.ndarray], channels: int, in_rows: int, in_cols: int, *, grouped: bool = False
) -> int:
    """Bytes of every buffer one call of the upscale graph (and the runtime around it) holds for a tile with
    these (windowed) ``feeds`` and a feature window of ``in_rows`` x ``in_cols``: an upper bound, as if no
    buffer were freed or reused before the call ends. ``grouped``: the backend runs the grouped path whatever
    the feeds (openvino replaces the convolution path by it, ``metasr.runtime.openvino_backend``); its terms
    are then counted even where :func:`conv_path` holds (x2 there: OpenVINO's peak 2.6x the convolution
    path's count, over ``--memory-mb``).

    Terms in floats (int64 counts as two), with C channels, h x w the window, H x W the tile, P_r x P_c offset
    pairs, G x L x K the grouping and T = 3 (one-pixel blocks) or 2s (blocks of s) the window of a member (see
    ``metaupscale_body``). Always: the window copy C*h*w; the weight predictor (3 + 3*256 + 2*27C) per pair; the
    slot filters G_r*K_r*P_c*27C and G_r*K_r*G_c*K_c*27C; the sr output, add_mean and the runtime's copy 3 * 3*H*W.
    Conv path (it convolves the window itself): the filter placement 4 * K_r*K_c*T_r*T_c*3C, the convolution output
    and its interleave (a DepthToSpace, or two transposes) 3 * 3*K_r*K_c*B (B member blocks, plus one per axis), the
    row pick and the column slice 2 * 3*H*W (these also bound ONNX Runtime's CPU variant, ``metasr.runtime.ort_cpu``,
    whose window in channel blocks takes the place of im2col's buffer: its measured peaks are 0.1-0.6x this count,
    ``benchmarks/ort_upscale_memory.py``). Grouped path: padded features and their transpose 2*C*(h+2)*(w+2); the
    window index 2 * M*T_r*T_c and the patch matrix M*T_r*T_c*C (M = G_r*G_c*L_r*L_c members); the filters 4 *
    G_r*G_c*K_r*K_c*T_r*T_c*3C; the products M*K_r*K_c*3; the pick index 2*H*W, the picked and transposed output
    2 * 3*H*W. Plus the int64 index feeds.
    """
    c, h, w = channels, in_rows, in_cols
    out_h, out_w = feeds["row_src"].size, feeds["col_src"].size
    p_c = feeds["col_offsets"].size
    pairs = feeds["row_offsets"].size * p_c
    g_r, l_r = feeds["row_groups"].shape[:2]
    g_c, l_c = feeds["col_groups"].shape[:2]
    k_r, k_c = feeds["row_slots"].shape[1], feeds["col_slots"].shape[1]
    s_r, s_c = feeds["row_groups"].shape[2], feeds["col_groups"].shape[2]
    t_r, t_c = (3 if s == 1 else 2 * s for s in (s_r, s_c))
    floats = c * h * w + pairs * (3 + 3 * 256 + 2 * 27 * c) + g_r * k_r * (p_c + g_c * k_c) * 27 * c
    floats += 3 * 3 * out_h * out_w
    filters = k_r * k_c * t_r * t_c * 3 * c
    if not grouped and conv_path(feeds):
        blocks = (-(-h // s_r) + 1) * (-(-w // s_c) + 1)
        floats += 4 * filters + 3 * 3 * k_r * k_c * blocks + 2 * 3 * out_h * out_w
    else:
        m = g_r * g_c * l_r * l_c
        floats += 2 * c * (h + 2) * (w + 2) + m * t_r * t_c * (2 + c) + 4 * g_r * g_c * filters
        floats += m * k_r * k_c * 3 + 2 * out_h * out_w + 2 * 3 * out_h * out_w
    index_bytes = sum(v.nbytes for v in feeds.values() if v.dtype == np.int64)
    return 4 * floats + index_bytes
