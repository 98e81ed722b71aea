"""What one upscale call costs by the path it takes, for the tiler's choice of phase cuts (numpy only).

Where the backend has the phase path (ONNX Runtime's CPU variant, :mod:`metasr.runtime.ort_cpu`), the tiler can
cut a long axis where the float32 drift of the offsets would take a call off it (:mod:`metasr.runtime.phase_parts`).
The cut plan usually has more, smaller calls than the plain one; which is faster depends on what each plain tile
costs on the grouped path (wide bands gather filters for many groups) against what the extra calls cost on the
phase path (about 3 ms each). :func:`call_seconds` estimates one call from its feeds' shapes alone:

* **phase path** (``G_r = G_c = q``, one-pixel blocks, at least ``PHASE_MIN_PIXELS`` input pixels: the
  variant's own test, less the order checks its parts meet by construction): a fixed cost plus the strided
  convolutions' work, sum over phase pairs (g, h) of ``(L_r + 1)(L_c + 1) * Opad(k_g, k_h)`` with ``k`` a
  phase's own slot count and ``Opad`` = 3 k_g k_h rounded up to 16 (:mod:`metasr.export.metaupscale_phase`);
* **grouped path** (everything else): the padded products ``G_r L_r K_r * G_c L_c K_c`` (blocks of s rows
  count s^2), the patch matrix's rows ``G_r L_r * G_c L_c``, and the filters gathered per group and slot pair
  ``G_r K_r * G_c K_c`` (27C floats each).

The constants are least-squares fits of 253 calls sampled from plain and cut plans (129 on the phase path, 124
on the grouped; x3.3 and x3.9 on 1000 x 1500 and 3000 x 4000 features at 64-512 MiB budgets, x1.1 and x1.7 at
64 MiB, x2.35 at 512; the minimum process CPU time of two repeats, 2 threads, Intel Xeon with AVX-512 VNNI,
ONNX Runtime 1.32, the filter table cached per plan): median error 3% (grouped) and 6% (phase), at most 34%
and 59% (x1.1's smallest calls). Only the comparison of two plans uses them; which of the
two measured faster is what they were checked on (``docs/upscale-stage.md``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PHASE_MIN_PIXELS", "call_seconds", "phase_call"]

PHASE_MIN_PIXELS = 1024  # as export/metaupscale_phase.py: below it the variant takes the grouped path
_PHASE_CALL_S = 3.36e-3  # fixed: ~150 nodes, the 100 convolutions' calls (q = 10), the reorders
_PHASE_PER_OUTPUT_CHANNEL_S = 7.31e-9  # per convolution output position and padded channel (9C products each)
_GROUPED_PER_PRODUCT_S = 20.4e-9  # per padded (member pixel, slot pair): its 27C products and the pick
_GROUPED_PER_MEMBER_S = 227e-9  # per member pixel: its row of the patch matrix (9C floats gathered)
_GROUPED_PER_FILTER_S = 2.84e-6  # per (group pair, slot pair): its 27C-float filter gathered from the table
_BLOCK = 16  # the NCHWc channel block the phase path pads each pair's channels to (AVX-512; 8 on AVX2: close)


def _exact_slots(slots: np.ndarray) -> list[int]:
    """Each group's own slot count (the hints pad a group's list by repeating its first slot)."""
    return [len(np.unique(row)) for row in slots]


def phase_call(feeds: dict[str, np.ndarray], in_pixels: int, q: int) -> bool:
    """Whether a call with these feeds takes the phase path (as far as its shapes tell)."""
    (g_r, _, s_r), (g_c, _, s_c) = feeds["row_groups"].shape, feeds["col_groups"].shape
    return g_r == g_c == q and s_r == s_c == 1 and in_pixels >= PHASE_MIN_PIXELS


def call_seconds(feeds: dict[str, np.ndarray], in_pixels: int, q: int | None) -> float:
    """Estimated CPU seconds of one upscale call with these feeds (``q``: the phase period, None: no phase path)."""
    g_r, l_r, s_r = feeds["row_groups"].shape
    g_c, l_c, s_c = feeds["col_groups"].shape
    if q is not None and phase_call(feeds, in_pixels, q):
        k_r, k_c = _exact_slots(feeds["row_slots"]), _exact_slots(feeds["col_slots"])
        channels = sum(math.ceil(3 * a * b / _BLOCK) * _BLOCK for a in k_r for b in k_c)
        return _PHASE_CALL_S + _PHASE_PER_OUTPUT_CHANNEL_S * (l_r + 1) * (l_c + 1) * channels
    k_r, k_c = feeds["row_slots"].shape[1], feeds["col_slots"].shape[1]
    members = g_r * l_r * s_r * g_c * l_c * s_c
    return (
        _GROUPED_PER_PRODUCT_S * members * k_r * k_c
        + _GROUPED_PER_MEMBER_S * members
        + _GROUPED_PER_FILTER_S * g_r * k_r * g_c * k_c
    )
