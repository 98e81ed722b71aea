"""The runtime's compiled helper (``metasr.runtime._native``, C, no dependencies), where it was built.

``pip install`` compiles ``runtime/_native.c`` where a C compiler is present (an optional extension: without one
the install goes on and the runtime runs its ONNX graphs as before). It holds one kernel: the upscale stage's
interleave from the direct paths' convolution outputs (ONNX Runtime's NCHWc layout) straight into the output
window, one pass where the graph took four or five (``ReorderOutput``, ``Concat``, ``Gather``, ``DepthToSpace`` or
``Col2Im``, and the host's copy of the window). A copy of values: bit-identical to the graph
(``tests/test_native.py``, against a numpy oracle and against the graph).

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

__all__ = ["ENV", "available", "axis_table", "interleave"]

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
    n, _, j_r, j_c = parts[0].shape
    cb = np.array([p.shape[1] // block for p in parts], np.int32)
    for p in parts:
        if p.dtype != np.float32 or p.ndim != 4 or p.shape[0] != n or p.shape[2:] != (j_r, j_c) or p.shape[1] % block:
            raise ValueError(f"interleave: part of shape {p.shape} {p.dtype} among ({n}, *, {j_r}, {j_c}) float32")
    out = np.empty((n, 3, rows.shape[0], cols.shape[0]), np.float32)
    _native.interleave(parts, cb, block, n, q_c, j_r, j_c, rows, cols, out)
    return out
