"""Node builders shared by the ``MetaUpscale`` body's paths (:mod:`metasr.export.metaupscale_body`): constants,
shapes, the And / Or of conditions, the "is this index one run" test, and the one-hot placement of each slot pair's
3x3 filter in a block's window. Names are graph value names; every function returns nodes (or one node)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metasr.export.onnx_proto import make_node, make_tensor_int64, protos

if TYPE_CHECKING:
    import onnx


__all__ = ["all_of", "any_of", "const", "dim", "embedded", "float_out", "mk", "one_run"]

mk = make_node


def const(name: str, values: list[int], scalar: bool = False) -> onnx.NodeProto:
    dims = [] if scalar else [len(values)]
    return mk("Constant", [], [name], value=make_tensor_int64(name, dims, values))


def float_out(name: str) -> onnx.ValueInfoProto:
    """A branch output without a declared type: float32 or float16, as the graph's (FP16 graphs keep the body)."""
    return protos().ValueInfoProto(name=name)


def dim(shape: str, index: int, name: str) -> onnx.NodeProto:
    return mk("Gather", [shape, f"c{index}"], [name], axis=0)  # (1,) int64


def _fold(op: str, conditions: list[str], out: str) -> list[onnx.NodeProto]:
    if len(conditions) == 1:
        return [mk("Identity", conditions, [out])]
    nodes, acc = [], conditions[0]
    for i, c in enumerate(conditions[1:]):
        name = out if i == len(conditions) - 2 else f"{out}_{i}"
        nodes.append(mk(op, [acc, c], [name]))
        acc = name
    return nodes


def all_of(conditions: list[str], out: str) -> list[onnx.NodeProto]:
    """``out`` = the And of ``conditions`` (each (1,) bool), one node per term."""
    return _fold("And", conditions, out)


def any_of(conditions: list[str], out: str) -> list[onnx.NodeProto]:
    """``out`` = the Or of ``conditions`` (each (1,) bool), one node per term."""
    return _fold("Or", conditions, out)


def one_run(index: str, pick: str, count: str, first: str, is_run: str) -> list[onnx.NodeProto]:
    """Whether ``index`` (n,) is one run ``first + arange(n)``: ``is_run`` (1,) bool, ``first`` (1,) its first
    value, ``count`` (1,) = n (from ``pick``'s shape)."""
    p = is_run + "_"
    return [
        mk("Shape", [pick], [count]),
        mk("Squeeze", [count], [p + "n"]),
        mk("Range", ["s0", p + "n", "s1"], [p + "ar"]),
        mk("Gather", [index, "c0"], [first]),
        mk("Sub", [index, p + "ar"], [p + "shift"]),
        mk("Sub", [p + "shift", first], [p + "dev"]),
        mk("Abs", [p + "dev"], [p + "dev_abs"]),
        mk("ReduceMax", [p + "dev_abs"], [p + "dev_max"], keepdims=1),
        mk("Equal", [p + "dev_max", "c0"], [is_run]),
    ]


def embedded(prefix: str) -> list[onnx.NodeProto]:
    """Every slot pair's 3x3 filter placed at its (row, column) within the T_r x T_c window of a member block:
    ``{prefix}emb`` (G_r, K_r, G_c, K_c, T_r, T_c, 3C) as (ty, tx, (c, o)). Exact: one-hot products."""
    p = prefix
    return [
        mk("Concat", ["G_row", "K_row", "G_col", "K_col", "c3", "cm1"], [p + "w6_shape"], axis=0),
        mk("Reshape", ["wrc", p + "w6_shape"], [p + "w_ky"]),  # (G_r, K_r, G_c, K_c, ky, (kx, c, o))
        mk("Transpose", ["row_E"], [p + "Er"], perm=[0, 1, 3, 2]),  # (G_r, K_r, T_r, ky)
        const(p + "er_axes", [2, 3]),
        mk("Unsqueeze", [p + "Er", p + "er_axes"], [p + "Er6"]),  # (G_r, K_r, 1, 1, T_r, ky)
        mk("MatMul", [p + "Er6", p + "w_ky"], [p + "w_ty"]),  # (G_r, K_r, G_c, K_c, T_r, (kx, c, o))
        mk("Concat", ["G_row", "K_row", "G_col", "K_col", "cm1", "c3", "C3"], [p + "w7_shape"], axis=0),
        mk("Reshape", [p + "w_ty", p + "w7_shape"], [p + "w_kx"]),  # (..., T_r, kx, (c, o))
        mk("Transpose", ["col_E"], [p + "Ec"], perm=[0, 1, 3, 2]),  # (G_c, K_c, T_c, kx)
        const(p + "ec_axes", [0, 1, 4]),
        mk("Unsqueeze", [p + "Ec", p + "ec_axes"], [p + "Ec7"]),  # (1, 1, G_c, K_c, 1, T_c, kx)
        mk("MatMul", [p + "Ec7", p + "w_kx"], [p + "emb"]),  # (G_r, K_r, G_c, K_c, T_r, T_c, (c, o))
    ]
