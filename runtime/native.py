"""The runtime's compiled helper (``metasr.runtime._native``, C, no dependencies), where it was built.

``pip install`` compiles ``runtime/_native.c`` where a C compiler is present (an optional extension: without one
the install goes on and the runtime runs its ONNX graphs as before). It holds two kernels of the upscale
stage's direct paths (``runtime/ort_direct.py``, ``runtime/ort_direct_phase.py``), both copies of values, so
bit-identical to what they replace (``tests/test_native.py``: numpy oracles, and the graphs):

* :func:`interleave`: the convolutions' outputs (ONNX Runtime's NCHWc layout) straight into the output window, one
  pass where the graph took four or five (``ReorderOutput``, ``Concat``, ``Gather``, ``DepthToSpace`` or
  ``Col2Im``, and the host's copy of the window);
* :func:`pack`: the phase path's filters from the filter table into the convolutions' OIhw{B}i{B}o layout, one
  pass where numpy took a fancy-index gather, a transposed fill and a transposed copy.

Shapes: parts[i] (n, cb_i B, J_r, J_c) in NCHWc memory ((n, cb_i, J_r, J_c, B) floats); per output row of the
window (phase, j, k, K) and per column the same; ``out[m, o, y, x] = part[pr q_c + pc][m, c // B, jr, jc, c % B]``
with ``c = (o Kr + kr) Kc + kc`` (the slot's channel (o, kr, kc) of its pair).

``METASR_NATIVE=0`` turns it off (the graphs' interleave runs: measurements, or to rule it out).
"""

from __future__ import annotations

import os

import numpy as np

try:
    from metasr.runtime import _native
except ImportError:  # not built (no compiler at install time): the graphs interleave
    _native = None

__all__ = ["ENV", "available", "axis_table", "interleave", "pack"]

ENV = "METASR_NATIVE"


def available() -> bool:
    """Whether the compiled helper is built and not turned off."""
    return _native is not None and os.environ.get(ENV, "1") != "0"


def axis_table(phase: np.ndarray, j: np.ndarray, k: np.ndarray, kk: np.ndarray) -> np.ndarray:
    """One axis's table (count, 4) int32: each output row's (or column's) phase, block index j, slot k and the
    slot count K of its phase."""
    return np.ascontiguousarray(np.stack([phase, j, k, kk], axis=1), dtype=np.int32)


def interleave(parts: list[np.ndarray], block: int, q_c: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The (n, 3, len(rows), len(cols)) float32 window from the NCHWc ``parts`` (row-major over (pr, pc), ``q_c``
    column phases; module docstring). Raises ValueError on any shape or index that does not fit."""
    if _native is None:
        raise RuntimeError("metasr.runtime._native is not built")
    if block < 1 or not parts:
        raise ValueError(f"interleave: block {block} and {len(parts)} parts")
    n, _, j_r, j_c = parts[0].shape
    cb = np.array([p.shape[1] // block for p in parts], np.int32)
    for p in parts:
        if p.dtype != np.float32 or p.ndim != 4 or p.shape[0] != n or p.shape[2:] != (j_r, j_c) or p.shape[1] % block:
            raise ValueError(f"interleave: part of shape {p.shape} {p.dtype} among ({n}, *, {j_r}, {j_c}) float32")
    out = np.empty((n, 3, rows.shape[0], cols.shape[0]), np.float32)
    _native.interleave(parts, cb, block, n, q_c, j_r, j_c, rows, cols, out)
    return out


def pack(table: np.ndarray, roffs: np.ndarray, coffs: np.ndarray, block: int, out: np.ndarray) -> None:
    """Fill ``out`` (n, opad, C, 3, 3) float32 with n phase pairs' filters in the OIhw{B}i{B}o layout: the
    channel (o, kr, kc) of pair p is the table's row (roffs[p, kr], coffs[p, kc]) (``table`` (nr, nc, 27 C),
    each row (ky, kx, c, o)); channels past 3 Kr Kc are zero. Raises ValueError on anything that does not fit."""
    if _native is None:
        raise RuntimeError("metasr.runtime._native is not built")
    if table.ndim != 3 or roffs.ndim != 2 or coffs.ndim != 2 or out.ndim != 5 or table.shape[2] % 27:
        raise ValueError("pack: table (nr, nc, 27 C), roffs (n, kr), coffs (n, kc), out (n, opad, C, 3, 3)")
    c = table.shape[2] // 27
    _native.pack(table, table.shape[1], roffs, coffs, roffs.shape[1], coffs.shape[1], c, block, out)
