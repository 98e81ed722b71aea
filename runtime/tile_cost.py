"""What one upscale call costs by the path it takes, for the tiler's choice of phase cuts (numpy only).

Where the backend has the phase path (ONNX Runtime's CPU variant, :mod:`metasr.runtime.ort_cpu`), the tiler can
cut a long axis where the float32 drift of the offsets would take a call off it (:mod:`metasr.runtime.phase_parts`).
The cut plan usually has more, smaller calls than the plain one; which is faster depends on what each plain tile
costs on the grouped path (wide bands gather filters for many groups) against what the extra calls cost on the
phase path (about 1.2 ms each at q = 10). :func:`call_seconds` estimates one call from its feeds' shapes alone:

* **phase path**, where the feeds pass the variant's own test (``ph_take`` in
  :mod:`metasr.export.metaupscale_phase`, ported in :func:`phase_call`: q groups of one-pixel blocks, one per
  input phase, the outputs in the period's order, p equal on both axes within 4..40, 3 K_r K_c <= 48, C in
  whole channel blocks, at least ``PHASE_MIN_PIXELS`` input pixels): a fixed cost per phase pair (q^2
  convolutions) plus their work, sum over phase pairs (g, h) of ``(L_r + 1)(L_c + 1) * Opad(k_g, k_h)`` with
  ``k`` a phase's own slot count and ``Opad`` = 3 k_g k_h rounded up to 16;
* **grouped path** (everything else): the padded products ``G_r L_r K_r * G_c L_c K_c`` (blocks of s rows
  count s^2), the patch matrix's rows ``G_r L_r * G_c L_c``, and the filters gathered per group and slot pair
  ``G_r K_r * G_c K_c`` (27C floats each).

The grouped path's constants are least-squares fits of 124 calls sampled from plain and cut plans (x3.3 and x3.9
on 1000 x 1500 and 3000 x 4000 features at 64-512 MiB budgets, x1.1 and x1.7 at 64 MiB, x2.35 at 512): median
error 3%, at most 34%. The phase path's are a fit (relative errors) of 152 phase calls of plain and cut plans
as the ort backend runs them, on its direct path (:mod:`metasr.runtime.ort_direct_phase`; the body's plan logic
and filter packing cost ~3.4 ms a call at q = 10 before it): q = 10 (x1.1, x1.7, x3.3, x3.9 on 1000 x 1500 and
3000 x 4000 features, 64-512 MiB), q = 4 (x1.25, 1000 x 2500) and q = 3 (x4/3, 800 x 1200); median error 7.5%,
at most 22%. Both: the minimum process CPU time of two or three repeats, 2 threads, Intel Xeon with AVX-512
VNNI, ONNX Runtime 1.32, the filter table cached per plan. The per-pixel terms scale with C / 32; a per-tile
filter table's predictor (offsets that hardly repeat) is not counted, as it is alike in both plans. Only the
comparison of two plans uses the figures; which of the two measured faster is what they were checked on
(``docs/upscale-stage.md``). Where the backend has no direct path (``METASR_ORT_DIRECT=0``) the phase path's
calls are priced with the first fit's constants, the body's: 3.36 ms a call plus 7.31 ns per output position and
padded channel (129 calls at q = 10, median error 6%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PHASE_MIN_PIXELS", "AxisPhase", "PathMemo", "axis_phase", "call_seconds", "phase_call", "phase_layouts"]

PHASE_MIN_PIXELS = 1024  # as export/metaupscale_phase.py (tests/test_tile_cost.py checks): below, the grouped path
PHASE_MIN_P, PHASE_MAX_P, PHASE_MAX_O = 4, 40, 48  # as there: the periods it has a branch for, 3 K_r K_c at most
_PHASE_PER_CONV_S = 12.2e-6  # fixed, per phase pair: its convolution's call (q^2 of them; the direct path's)
_PHASE_PER_OUTPUT_CHANNEL_S = 8.07e-9  # per convolution output position and padded channel (9C products each)
# the body's phase path, where the ort backend has no direct path (METASR_ORT_DIRECT=0): the first fit, 129 calls
# at q = 10, median error 6% (its ~150 plan-logic nodes and the filter packing in every call)
_BODY_PHASE_CALL_S = 3.36e-3
_BODY_PHASE_PER_OUTPUT_CHANNEL_S = 7.31e-9
_GROUPED_PER_PRODUCT_S = 20.4e-9  # per padded (member pixel, slot pair): its 27C products and the pick
_GROUPED_PER_MEMBER_S = 227e-9  # per member pixel: its row of the patch matrix (9C floats gathered)
_GROUPED_PER_FILTER_S = 2.84e-6  # per (group pair, slot pair): its 27C-float filter gathered from the table
_FIT_CHANNELS = 32  # the constants' C (the bundled model); the per-pixel terms scale with C, the fixed one not
_BLOCK = 16  # the NCHWc channel block the phase path pads each pair's channels to (AVX-512; 8 on AVX2)


@dataclass(frozen=True)
class AxisPhase:
    """One axis' phase layout: the period ``p``, each group's own slot count ``own`` (G,), each input phase's
    group ``gop`` (q,) and the first output's position ``y0`` in the layout (the phase path's output crop)."""

    p: int
    own: np.ndarray
    gop: np.ndarray
    y0: int


# an axis part's phase layout (or None), keyed by id of its hints
PathMemo = dict[int, tuple[np.ndarray, "AxisPhase | None"]]


def axis_phase(feeds: dict[str, np.ndarray], axis: str, q: int) -> AxisPhase | None:
    """The phase layout of one axis' hints, as the variant's phase path tests it (``ph_{axis}_ok`` in
    export/metaupscale_phase.py): q groups of one-pixel blocks, one per input phase; every output's member on its
    group's phase and its slot within the group's own count; the outputs exactly at (block + 1) p + (the phase's
    first slot) + slot - y0. Returns the layout or None."""
    src, groups, slots, pick = (feeds[f"{axis}_{n}"] for n in ("src", "groups", "slots", "pick"))
    g, members, block = groups.shape
    k = slots.shape[1]
    if g != q or block != 1 or pick.size == 0 or members == 0:
        return None
    first = src[groups[:, 0, 0]] % q  # each group's phase
    if np.bincount(first, minlength=q).max() != 1:
        return None
    group, slot = pick // (members * k), pick % k
    member_in = src[groups[:, :, 0]].reshape(-1)[pick // k]  # the input row (column) of each output's member
    rel = member_in - first[group]
    own = (slots != slots[:, :1]).sum(axis=1) + 1  # the hints pad a group's slot list with its first slot
    if np.any(rel % q) or np.any(slot >= own[group]):
        return None
    gop = np.argsort(first)
    per_phase = own[gop]
    p = int(per_phase.sum())
    start = np.concatenate(([0], np.cumsum(per_phase)[:-1]))
    position = (rel // q + 1) * p + start[first[group]] + slot
    offset = position - np.arange(pick.size)
    return AxisPhase(p, own, gop, int(offset[0])) if np.all(offset == offset[0]) else None


def _memo_axis(feeds: dict[str, np.ndarray], axis: str, q: int, memo: PathMemo | None) -> AxisPhase | None:
    hints = feeds[f"{axis}_groups"]
    if memo is None:
        return axis_phase(feeds, axis, q)
    if id(hints) not in memo:  # the array is kept with its entry, so its id is not reused while the memo lives
        memo[id(hints)] = (hints, axis_phase(feeds, axis, q))
    return memo[id(hints)][1]


def phase_call(
    feeds: dict[str, np.ndarray], in_pixels: int, q: int, channels: int = _FIT_CHANNELS, memo: PathMemo | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Whether a call with these feeds takes the phase path: the groups' own slot counts per axis, or None.
    ``memo``: one dict per plan, so the tiles of a band (of a column part) test its hints once."""
    layouts = phase_layouts(feeds, in_pixels, q, channels, memo)
    return None if layouts is None else (layouts[0].own, layouts[1].own)


def phase_layouts(
    feeds: dict[str, np.ndarray],
    in_pixels: int,
    q: int,
    channels: int = _FIT_CHANNELS,
    memo: PathMemo | None = None,
    block: int = _BLOCK,
) -> tuple[AxisPhase, AxisPhase] | None:
    """:func:`phase_call`'s test, returning both axes' layouts (rows, columns) where it holds; ``block``: the CPU's
    NCHWc block (the variant wants C in whole blocks: 16 with AVX-512, 8 with AVX2)."""
    if in_pixels < PHASE_MIN_PIXELS or channels % block:
        return None
    rows, cols = _memo_axis(feeds, "row", q, memo), _memo_axis(feeds, "col", q, memo)
    if rows is None or cols is None or rows.p != cols.p or not PHASE_MIN_P <= rows.p <= PHASE_MAX_P:
        return None
    if 3 * feeds["row_slots"].shape[1] * feeds["col_slots"].shape[1] > PHASE_MAX_O:
        return None
    return rows, cols


def call_seconds(
    feeds: dict[str, np.ndarray],
    in_pixels: int,
    q: int | None,
    channels: int = _FIT_CHANNELS,
    memo: PathMemo | None = None,
    direct: bool = True,
) -> float:
    """Estimated CPU seconds of one upscale call with these feeds (``q``: the phase period, None: no phase path;
    ``memo`` as :func:`phase_call`; ``direct``: the backend runs phase calls on its direct path, else the body's)."""
    g_r, l_r, s_r = feeds["row_groups"].shape
    g_c, l_c, s_c = feeds["col_groups"].shape
    per_channel = channels / _FIT_CHANNELS
    slots = None if q is None else phase_call(feeds, in_pixels, q, channels, memo)
    if slots is not None:
        pairs = 3 * np.outer(slots[0], slots[1])
        padded = int((-(-pairs // _BLOCK) * _BLOCK).sum())
        work = per_channel * (l_r + 1) * (l_c + 1) * padded
        if not direct:
            return _BODY_PHASE_CALL_S + _BODY_PHASE_PER_OUTPUT_CHANNEL_S * work
        return _PHASE_PER_CONV_S * q * q + _PHASE_PER_OUTPUT_CHANNEL_S * work
    k_r, k_c = feeds["row_slots"].shape[1], feeds["col_slots"].shape[1]
    members = g_r * l_r * s_r * g_c * l_c * s_c
    return per_channel * (
        _GROUPED_PER_PRODUCT_S * members * k_r * k_c
        + _GROUPED_PER_MEMBER_S * members
        + _GROUPED_PER_FILTER_S * g_r * k_r * g_c * k_c
    )
