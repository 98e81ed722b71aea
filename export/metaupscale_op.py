"""The ``MetaUpscale`` custom op: its contract and its standard-op body (an ONNX model-local function).

Contract (one node, domain ``metasr``, op_type ``MetaUpscale``, attributes ``plugin_namespace="metasr"``,
``plugin_version="1"``; TensorRT >= 10.7 maps it to the registered plugin, other consumers run the body):

inputs
  0 ``features``  float (N, C, h, w)
  1 ``weights``   float (P_r, P_c, C*9*3), per offset pair the official (C, ky, kx, out) layout
  2 ``row_src``   int64 (H,)  source row per output row, in [0, h)
  3 ``row_idx``   int64 (H,)  row-offset index per output row, in [0, P_r)
  4 ``col_src``   int64 (W,)  likewise for columns
  5 ``col_idx``   int64 (W,)
output
  0 ``out``       float (N, 3, H, W): out[n, o, i, j] = sum over c, ky, kx of
                  F_pad[n, c, row_src[i] + ky, col_src[j] + kx] * weights[row_idx[i], col_idx[j], c, ky, kx, o]
                  with F zero-padded by one pixel.

The body never builds a per-output-pixel weight tensor. The padded features go channels-last once, with their
three column shifts side by side (N, h+2, w, 3C), all input-sized. Then, per kernel row ky, each output row
gathers its source row (N, H, w, 3C) and contracts it, at every input column, with the filters of all column
offsets of that row's offset ((N, H, w, 3C) @ (H, 3C, P_c*3)); the three partial sums are added and each
output column picks its (source column, column offset) entry. Memory: 3*H*w*3C + H*9C*P_c*3 + 3*H*w*P_c*3
floats at most, all bounded by tiling the output rows.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

__all__ = ["DOMAIN", "OP_TYPE", "PLUGIN_NAMESPACE", "PLUGIN_VERSION", "function_proto", "make_node"]

DOMAIN = "metasr"
OP_TYPE = "MetaUpscale"
PLUGIN_NAMESPACE = "metasr"
PLUGIN_VERSION = "1"
INPUTS = ("features", "weights", "row_src", "row_idx", "col_src", "col_idx")
OUTPUTS = ("out",)


def make_node(inputs: list[str], output: str, name: str = "meta_upscale") -> onnx.NodeProto:
    """The ``MetaUpscale`` node with its TensorRT plugin attributes."""
    return helper.make_node(
        OP_TYPE,
        inputs,
        [output],
        name=name,
        domain=DOMAIN,
        plugin_namespace=PLUGIN_NAMESPACE,
        plugin_version=PLUGIN_VERSION,
    )


def _const(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    )


def function_proto(opset: int) -> onnx.FunctionProto:
    """The standard-op body of ``MetaUpscale`` (ONNX opset ``opset`` >= 13)."""
    n = [
        _const(k, v)
        for k, v in {
            "c0": [0],
            "c1": [1],
            "c2": [2],
            "c3": [3],
            "cm1": [-1],
            "pads": [0, 0, 1, 1, 0, 0, 1, 1],
            "ax2": [2],
            "ax3": [3],
        }.items()
    ]
    # sizes C, w, P_c; padded features channels-last, the three kx shifts side by side (input-sized)
    n += [
        helper.make_node("Shape", ["features"], ["f_shape"]),
        helper.make_node("Gather", ["f_shape", "c1"], ["C"], axis=0),
        helper.make_node("Gather", ["f_shape", "c3"], ["w"], axis=0),
        helper.make_node("Shape", ["weights"], ["wt_shape"]),
        helper.make_node("Gather", ["wt_shape", "c1"], ["P_c"], axis=0),
        helper.make_node("Pad", ["features", "pads"], ["fp"], mode="constant"),  # (N, C, h+2, w+2)
        helper.make_node("Transpose", ["fp"], ["fpt"], perm=[0, 2, 3, 1]),
    ]  # (N, h+2, w+2, C)
    for kx in range(3):
        n += [
            helper.make_node("Add", ["w", f"c{kx}"], [f"end{kx}"]),
            helper.make_node("Slice", ["fpt", f"c{kx}", f"end{kx}", "ax2"], [f"shift{kx}"]),
        ]  # (N, h+2, w, C)
    n += [helper.make_node("Concat", ["shift0", "shift1", "shift2"], ["x3"], axis=3)]  # (N, h+2, w, 3C): (kx, c)
    # filters regrouped per kernel row: (P_r, ky, kx*C, P_c*3), then one set per output row: (H, 3, 3C, P_c*3)
    n += [
        helper.make_node("Concat", ["cm1", "P_c", "C", "c3", "c3", "c3"], ["w6_shape"], axis=0),
        helper.make_node("Reshape", ["weights", "w6_shape"], ["w6"]),  # (P_r, P_c, C, ky, kx, o)
        helper.make_node("Transpose", ["w6"], ["w6t"], perm=[0, 3, 4, 2, 1, 5]),  # (P_r, ky, kx, C, P_c, o)
        helper.make_node("Mul", ["C", "c3"], ["C3"]),
        helper.make_node("Mul", ["P_c", "c3"], ["Pc3"]),
        helper.make_node("Concat", ["cm1", "c3", "C3", "Pc3"], ["w4_shape"], axis=0),
        helper.make_node("Reshape", ["w6t", "w4_shape"], ["w4"]),  # (P_r, 3, 3C, P_c*3)
        helper.make_node("Gather", ["w4", "row_idx"], ["w_rows"], axis=0),
    ]  # (H, 3, 3C, P_c*3)
    partial = []
    for ky in range(3):
        # output row i reads padded row row_src[i] + ky at every input column: (N, H, w, 3C)
        n += [
            helper.make_node("Add", ["row_src", f"c{ky}"], [f"rows{ky}"]),
            helper.make_node("Gather", ["x3", f"rows{ky}"], [f"strip{ky}"], axis=1),
            helper.make_node("Gather", ["w_rows", f"c{ky}"], [f"wk{ky}"], axis=1),  # (H, 1, 3C, P_c*3)
            helper.make_node("Squeeze", [f"wk{ky}", "c1"], [f"w_ky{ky}"]),  # (H, 3C, P_c*3)
            helper.make_node("MatMul", [f"strip{ky}", f"w_ky{ky}"], [f"part{ky}"]),
        ]  # (N, H, w, P_c*3)
        partial.append(f"part{ky}")
    n += [
        helper.make_node("Add", [partial[0], partial[1]], ["part01"]),
        helper.make_node("Add", ["part01", partial[2]], ["all_cols"]),
    ]  # every column offset at every column
    # pick each output column's (source column, column offset): flat index col_src * P_c + col_idx
    n += [
        helper.make_node("Mul", ["col_src", "P_c"], ["col_base"]),
        helper.make_node("Add", ["col_base", "col_idx"], ["col_flat"]),  # (W,)
        helper.make_node("Shape", ["all_cols"], ["ac_shape"]),
        helper.make_node("Slice", ["ac_shape", "c0", "c2", "c0"], ["nh"]),
        helper.make_node("Concat", ["nh", "cm1", "c3"], ["ac3_shape"], axis=0),
        helper.make_node("Reshape", ["all_cols", "ac3_shape"], ["ac3"]),  # (N, H, w*P_c, 3)
        helper.make_node("Gather", ["ac3", "col_flat"], ["picked"], axis=2),  # (N, H, W, 3)
        helper.make_node("Transpose", ["picked"], ["out"], perm=[0, 3, 1, 2]),
    ]  # (N, 3, H, W)
    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        list(INPUTS),
        list(OUTPUTS),
        n,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=["plugin_namespace", "plugin_version"],
    )
