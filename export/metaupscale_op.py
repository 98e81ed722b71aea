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

The body never builds a per-output-pixel weight tensor: per output row it contracts the row's 3-row source
strip, at every input column, with the filters of all column offsets of that row's offset
((N, H, w, 9C) @ (H, 9C, P_c*3)), then picks each output column's (source column, column offset) entry.
Memory: H*w*9C + H*9C*P_c*3 + H*w*P_c*3 floats, all bounded by tiling the output rows.
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
    n = []
    n += [
        _const(k, v)
        for k, v in {
            "c0": [0],
            "c1": [1],
            "c2": [2],
            "c3": [3],
            "cm1": [-1],
            "c9": [9],
            "c3x": [3],
            "pads": [0, 0, 1, 1, 0, 0, 1, 1],
            "ax2": [2],
            "ax3": [3],
        }.items()
    ]
    # sizes: C, w, P_c
    n += [
        helper.make_node("Shape", ["features"], ["f_shape"]),
        helper.make_node("Gather", ["f_shape", "c1"], ["C"], axis=0),
        helper.make_node("Gather", ["f_shape", "c3"], ["w"], axis=0),
        helper.make_node("Shape", ["weights"], ["wt_shape"]),
        helper.make_node("Gather", ["wt_shape", "c1"], ["P_c"], axis=0),
        helper.make_node("Pad", ["features", "pads"], ["fp"], mode="constant"),
    ]  # (N, C, h+2, w+2)
    slices = []
    for ky in range(3):
        n += [
            helper.make_node("Add", ["row_src", f"c{ky}"], [f"rows{ky}"]),
            helper.make_node("Gather", ["fp", f"rows{ky}"], [f"strip{ky}"], axis=2),
        ]  # (N, C, H, w+2)
        for kx in range(3):
            n += [
                helper.make_node("Add", ["w", f"c{kx}"], [f"end{ky}{kx}"]),
                helper.make_node("Slice", [f"strip{ky}", f"c{kx}", f"end{ky}{kx}", "ax3"], [f"s{ky}{kx}"]),
                helper.make_node("Unsqueeze", [f"s{ky}{kx}", "ax2"], [f"u{ky}{kx}"]),
            ]  # (N, C, 1, H, w)
            slices.append(f"u{ky}{kx}")
    n += [
        helper.make_node("Concat", slices, ["taps"], axis=2),  # (N, C, 9, H, w)
        helper.make_node("Mul", ["C", "c9"], ["C9"]),
        helper.make_node("Concat", ["c0", "C9", "cm1", "w"], ["taps_shape"], axis=0),
        helper.make_node("Reshape", ["taps", "taps_shape"], ["patches_t"]),  # (N, 9C, H, w), (c, ky, kx)
        helper.make_node("Transpose", ["patches_t"], ["patches"], perm=[0, 2, 3, 1]),
    ]  # (N, H, w, 9C)
    # filters of every column offset for each output row's row offset: (H, 9C, P_c*3)
    n += [
        helper.make_node("Concat", ["cm1", "P_c", "C9", "c3x"], ["w4_shape"], axis=0),
        helper.make_node("Reshape", ["weights", "w4_shape"], ["w4"]),  # (P_r, P_c, 9C, 3)
        helper.make_node("Transpose", ["w4"], ["w4t"], perm=[0, 2, 1, 3]),  # (P_r, 9C, P_c, 3)
        helper.make_node("Mul", ["P_c", "c3x"], ["Pc3"]),
        helper.make_node("Concat", ["cm1", "C9", "Pc3"], ["wr_shape"], axis=0),
        helper.make_node("Reshape", ["w4t", "wr_shape"], ["wr"]),  # (P_r, 9C, P_c*3)
        helper.make_node("Gather", ["wr", "row_idx"], ["w_rows"], axis=0),  # (H, 9C, P_c*3)
        helper.make_node("MatMul", ["patches", "w_rows"], ["all_cols"]),
    ]  # (N, H, w, P_c*3)
    # pick each output column's (source column, column offset): flat index col_src * P_c + col_idx
    n += [
        helper.make_node("Mul", ["col_src", "P_c"], ["col_base"]),
        helper.make_node("Add", ["col_base", "col_idx"], ["col_flat"]),  # (W,)
        helper.make_node("Shape", ["all_cols"], ["ac_shape"]),
        helper.make_node("Slice", ["ac_shape", "c0", "c2", "c0"], ["nh"]),
        helper.make_node("Concat", ["nh", "cm1", "c3x"], ["ac3_shape"], axis=0),
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
