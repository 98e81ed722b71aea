"""The projection plan computed inside an ONNX graph: standard ops, bit for bit what the runtime feeds.

:func:`plan_nodes` produces, from the graph's ``features`` (1, C, h, w) and a ``scale`` (float64 scalar) or an
exact ``size`` (int64 [2] = (H', W')), every plan input of the upscale graph
(:data:`metasr.runtime.feeds.UPSCALE_PLAN_INPUTS`), one axis at a time:

* scale: ``n_out = floor(scale * n)`` in float64 (Python's ``int(scale * n)``); size: the smallest scale whose
  output covers the size (:func:`metasr.runtime.batch.scale_for_size`: ``max(W'/w, H'/h)``, then up to
  :data:`NEXT_STEPS` steps to the next float64 while an axis falls short), the output centre-cropped to the size;
* ``inv = float32(1 / scale)``, ``t = float32(i) * inv`` for the output positions i, ``src = floor(t)``,
  ``offset = t - src`` (:func:`metasr.runtime.projection.axis_projection`);
* the offsets merged exactly as :func:`metasr.runtime.projection.project` does: sorted (``TopK``), a cluster
  starts at the first value more than ``merge_tol`` above the previous cluster's start (a ``Loop`` with one
  iteration per cluster), each cluster represented by the offset of its lowest output position;
* grouping hints (valid under :func:`metasr.runtime.feeds.check_hints`, simpler than the runtime's): blocks of
  one input row; blocks whose hosted rows have equal offset indices form a group (``Unique`` on the rows of a
  (blocks, K) signature matrix); no merging of small groups, no chunking. Integer scales give one group per
  axis (the body's convolution path, as the runtime); other scales keep the float32 "exception" rows' groups
  apart (counted as G * L * K products per axis pair: 1.2-1.56x the runtime's hints at x2.3 / x2.7 / x3.7, 1.78x
  at half-integer scales, equal at x1.1 / x2 / x3.3 / x4 for LR 120x80 .. 640x360; docs/portable.md).

Float64 scale: the official output size is ``int(r * h)`` in double arithmetic; a float32 scale changes it.
The "inv" form (``out_size`` int64 [2] and ``inv_scale`` float32 [1] in, both computed by the caller in float64)
has no float64 at all, for runtimes that compute float64 in float32 (OpenVINO's CPU plugin): the projection is
float32 ``Mul``/``Floor``/``Sub`` and the merge compares float32 differences with :func:`f32_threshold`, both
exact there (measured, docs/portable.md); its int64 values stay below 2**31 (OpenVINO computes int64 as int32).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["NEXT_STEPS", "f32_threshold", "plan_nodes"]

# nextafter steps the size form allows; measured: 300,000 random (h, w, H', W') with sides up to 4000 and scales up
# to 4 took 0 steps in 291,085 cases and 1 in 8,915, never more
NEXT_STEPS = 4
_F, _D, _I = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64


class _Builder:
    """Nodes with generated, unique output names (``prefix`` + a counter)."""

    def __init__(self, prefix: str) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.prefix = prefix
        self._count = itertools.count()

    def __call__(
        self, op: str, inputs: list[str], n_out: int = 1, out: list[str] | None = None, **attrs: object
    ) -> Any:  # the output name, or the list of names when there are several
        names = out or [f"{self.prefix}{op.lower()}_{next(self._count)}" for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, names, name=f"{self.prefix}n{next(self._count)}", **attrs))
        return names[0] if len(names) == 1 else names

    def const(self, value: float | int | list, dtype: int = _I) -> str:
        arr = np.array(value, dtype=helper.tensor_dtype_to_np_dtype(dtype))
        name = f"{self.prefix}k_{next(self._count)}"
        self.nodes.append(
            helper.make_node("Constant", [], [name], name=f"{name}_n", value=numpy_helper.from_array(arr, name))
        )
        return name


def f32_threshold(tol: float) -> np.float32:
    """The largest float32 <= ``tol``: for two offsets v >= s of the projection, ``float64(v) - float64(s) > tol``
    exactly when ``float32(v - s) > f32_threshold(tol)``. Offsets are multiples of 2**-26 (t = i * inv with inv >=
    1/8), so a difference near ``tol`` (< 2**-13) is exact in float32; one that float32 rounds is >= 2**-2."""
    t = np.float32(tol)
    return t if float(t) <= tol else np.nextafter(t, np.float32(-np.inf))


def _merge_loop(vd: str, tol: float, axis: str, dtype: int) -> onnx.GraphProto:
    """Loop body: from the current cluster start ``s`` (``dtype``: float64, or float32 with
    :func:`f32_threshold`), the next start's index in the sorted offsets ``vd`` (outer scope) and its value;
    scans out that index (``n`` past the last cluster)."""
    b = _Builder(f"merge_{axis}/")
    diff = b("Sub", [vd, "s_in"])
    limit = b.const(tol, _D) if dtype == _D else b.const(float(f32_threshold(tol)), _F)
    mask = b("Cast", [b("Greater", [diff, limit])], to=TensorProto.INT32)
    nxt = b("ArgMax", [mask], axis=0, keepdims=0)
    more = b("Cast", [b("ReduceMax", [mask], keepdims=0)], out=["cond_out"], to=TensorProto.BOOL)
    b("Gather", [vd, nxt], out=["s_out"])
    n = b("Squeeze", [b("Shape", [vd])])
    b("Where", [more, nxt, n], out=["bound"])
    return helper.make_graph(
        b.nodes,
        "merge_offsets",
        [
            helper.make_tensor_value_info("iter", _I, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_in", dtype, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_out", dtype, []),
            helper.make_tensor_value_info("bound", _I, []),
        ],
    )


def _axis(b: _Builder, axis: str, n_out: str, start: str, length: str, inv: str, tol: float, dtype: int) -> list[str]:
    """One axis: ``{axis}_offsets``, ``_src``, ``_idx`` for output positions [start, start + length) of an
    ``n_out`` axis, and the grouping hints; returns the plan-input names it made. ``dtype``: the merge's
    arithmetic (float64; float32 for the "inv" form)."""
    zero, one = b.const(0), b.const(1)
    t = b("Mul", [b("Cast", [b("Range", [zero, n_out, one])], to=_F), inv])  # (n_out,) float32
    src_f = b("Floor", [t])
    off = b("Sub", [t, src_f])  # (n_out,) in [0, 1)
    n1 = b("Reshape", [n_out, b.const([1])])
    vals, order = b("TopK", [off, n1], n_out=2, largest=0, sorted=1)  # ascending
    vd = b("Cast", [vals], to=_D) if dtype == _D else vals
    first_v = b("Gather", [vd, zero])
    true = b.const(True, TensorProto.BOOL)
    body = _merge_loop(vd, tol, axis, dtype)
    _, bounds = b("Loop", [n_out, true, first_v], n_out=2, body=body)  # (P,) cluster starts
    flags = b("ScatterElements", [b("ConstantOfShape", [b("Add", [n1, one])], value=numpy_helper.from_array(
        np.zeros(1, np.int64))), bounds, b("Expand", [one, b("Shape", [bounds])])])  # fmt: skip
    cid = b("CumSum", [b("Slice", [flags, b.const([0]), n1]), zero])  # (n_out,) cluster of each sorted value
    # each cluster's lowest output position: sort (cluster, position) keys; clusters keep their extents
    keys = b("TopK", [b("Add", [b("Mul", [cid, n_out]), order]), n1], n_out=2, largest=0, sorted=1)[0]
    starts = b("Concat", [b.const([0]), b("Slice", [bounds, b.const([0]), b.const([-1])])], axis=0)
    lowest = b("Gather", [keys, starts])  # cluster j's smallest key: j * n_out + its lowest position
    if dtype == _D:
        first = b("Mod", [lowest, n_out])
    else:  # OpenVINO's integer Mod is wrong above 2**24 (measured: n_out 4523, r 3.016): subtract j * n_out
        first = b("Sub", [lowest, b("Mul", [b("Range", [zero, b("Squeeze", [b("Shape", [starts])]), one]), n_out])])
    b("Gather", [off, first], out=[f"{axis}_offsets"])
    idx_full = b("ScatterElements", [b("Mul", [order, zero]), order, cid])
    stop = b("Add", [start, length])
    s1, e1 = b("Reshape", [start, b.const([1])]), b("Reshape", [stop, b.const([1])])
    src = b("Slice", [b("Cast", [src_f], to=_I), s1, e1], out=[f"{axis}_src"])
    idx = b("Slice", [idx_full, s1, e1], out=[f"{axis}_idx"])
    _hints(b, axis, src, idx, length)
    return [f"{axis}_{n}" for n in ("offsets", "src", "idx", "groups", "slots", "pick")]


def _hints(b: _Builder, axis: str, src: str, idx: str, n: str) -> None:
    """Signature-group hints (module docstring) for output positions with sources ``src`` and offsets ``idx``."""
    zero, one = b.const(0), b.const(1)
    _, first, block, counts = b("Unique", [src], n_out=4, sorted=1)  # per hosting row: first output, count
    k = b("ReduceMax", [counts], keepdims=0)
    ks = b("Range", [zero, k, one])  # (K,)
    first_c = b("Unsqueeze", [first, one])  # (B, 1)
    last = b("Sub", [n, one])
    cand = b("Min", [b("Add", [first_c, ks]), last])  # (B, K)
    hosted = b("Less", [ks, b("Unsqueeze", [counts, one])])
    sig = b("Where", [hosted, b("Gather", [idx, cand]), b.const(-1)])  # (B, K) signature of each block
    _, gfirst, group, gcounts = b("Unique", [sig], n_out=4, axis=0, sorted=1)  # groups of equal signatures
    length = b("ReduceMax", [gcounts], keepdims=0)
    nb = b("Squeeze", [b("Shape", [first])])
    blocks = b("Range", [zero, nb, one])
    order = b("TopK", [b("Add", [b("Mul", [group, nb]), blocks]), b("Reshape", [nb, b.const([1])])], n_out=2,
              largest=0, sorted=1)[1]  # fmt: skip  # blocks by (group, block)
    gstart = b("CumSum", [gcounts, zero], exclusive=1)
    rank_sorted = b("Sub", [blocks, b("Gather", [gstart, b("Gather", [group, order])])])
    rank = b("ScatterElements", [blocks, order, rank_sorted])  # each block's member index in its group
    lead = b("Gather", [first, gfirst])  # (G,) first output of each group's first block
    g = b("Squeeze", [b("Shape", [gfirst])])
    grid_shape = b("Concat", [b("Reshape", [g, b.const([1])]), b("Reshape", [length, b.const([1])])], axis=0)
    grid = b("Reshape", [b("Expand", [b("Unsqueeze", [lead, one]), grid_shape]), b.const([-1])])
    members = b("ScatterElements", [grid, b("Add", [b("Mul", [group, length]), rank]), first])
    b("Reshape", [members, b("Concat", [grid_shape, b.const([1])], axis=0)], out=[f"{axis}_groups"])  # (G, L, 1)
    lead_c = b("Unsqueeze", [lead, one])
    slot_ok = b("Less", [ks, b("Unsqueeze", [b("Gather", [counts, gfirst]), one])])
    b("Where", [slot_ok, b("Add", [lead_c, ks]), lead_c], out=[f"{axis}_slots"])  # (G, K)
    pos = b("Sub", [b("Range", [zero, n, one]), b("Gather", [first, block])])  # row within its block's outputs
    member = b("Add", [b("Mul", [b("Gather", [group, block]), length]), b("Gather", [rank, block])])
    b("Add", [b("Mul", [member, k]), pos], out=[f"{axis}_pick"])  # (n,)


def _scale_sizes(b: _Builder, h: str, w: str, size: str) -> tuple[str, str, str, str, str]:
    """Size form: (scale, full H, full W, first row, first column) for the centre crop of ``size`` (H', W')."""
    hd, wd = b("Cast", [h], to=_D), b("Cast", [w], to=_D)
    th = b("Gather", [size, b.const(0)])
    tw = b("Gather", [size, b.const(1)])
    r = b("Max", [b("Div", [b("Cast", [tw], to=_D), wd]), b("Div", [b("Cast", [th], to=_D), hd])])
    for _ in range(NEXT_STEPS):  # scale_for_size's nextafter loop; r in [1, 8): the ulp follows the binade
        short = b("Or", [b("Less", [_floor_i(b, r, hd), th]), b("Less", [_floor_i(b, r, wd), tw])])
        ulp = b("Where", [b("GreaterOrEqual", [r, b.const(4.0, _D)]), b.const(2.0**-50, _D),
                          b("Where", [b("GreaterOrEqual", [r, b.const(2.0, _D)]), b.const(2.0**-51, _D),
                                      b.const(2.0**-52, _D)])])  # fmt: skip
        r = b("Where", [short, b("Add", [r, ulp]), r])
    full_h, full_w = _floor_i(b, r, hd), _floor_i(b, r, wd)
    two = b.const(2)
    return r, full_h, full_w, b("Div", [b("Sub", [full_h, th]), two]), b("Div", [b("Sub", [full_w, tw]), two])


def _floor_i(b: _Builder, r: str, nd: str) -> str:
    return b("Cast", [b("Floor", [b("Mul", [r, nd])])], to=_I)


def plan_nodes(form: str, merge_tol: float) -> list[onnx.NodeProto]:
    """Nodes computing the upscale graph's plan inputs from ``features`` and ``scale`` (``form="scale"``),
    ``size`` (``form="size"``) or ``out_size`` and ``inv_scale`` (``form="inv"``: no float64; ``inv_scale`` stays
    a graph input, the two-graph upscale graph's own)."""
    b = _Builder("plan/")
    shape = b("Shape", ["features"])
    h, w = b("Gather", [shape, b.const(2)]), b("Gather", [shape, b.const(3)])
    dtype = _D
    if form == "inv":  # the caller's float64 arithmetic: (int(r * h), int(r * w)) and float32(1 / r)
        full_h, full_w = b("Gather", ["out_size", b.const(0)]), b("Gather", ["out_size", b.const(1)])
        y0 = x0 = b.const(0)
        out_h, out_w, inv, dtype = full_h, full_w, "inv_scale", _F
    elif form == "scale":
        r = "scale"
        full_h, full_w = _floor_i(b, r, b("Cast", [h], to=_D)), _floor_i(b, r, b("Cast", [w], to=_D))
        y0 = x0 = b.const(0)
        out_h, out_w = full_h, full_w
    else:
        r, full_h, full_w, y0, x0 = _scale_sizes(b, h, w, "size")
        out_h, out_w = b("Gather", ["size", b.const(0)]), b("Gather", ["size", b.const(1)])
    if form != "inv":
        inv = b("Cast", [b("Div", [b.const(1.0, _D), r])], to=_F)
        b("Reshape", [inv, b.const([1])], out=["inv_scale"])
    _axis(b, "row", full_h, y0, out_h, inv, merge_tol, dtype)
    _axis(b, "col", full_w, x0, out_w, inv, merge_tol, dtype)
    return b.nodes
