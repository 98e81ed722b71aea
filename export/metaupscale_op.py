"""The ``MetaUpscale`` custom op: its contract and its standard-op body (an ONNX model-local function).

Contract (one node, domain ``metasr``, op_type ``MetaUpscale``, attributes ``plugin_namespace="metasr"``,
``plugin_version="1"`` and ``aot=1``; TensorRT >= 10.7 maps it to the registered plugin, other consumers run
the body). ``aot=1`` asks TensorRT's parser for the plugin's ahead-of-time implementation (the kernel's PTX
stored in the engine, so the engine runs without Python); the body ignores all three attributes.

inputs
  0 ``features``  float (N, C, h, w)
  1 ``weights``   float (P_r, P_c, 9*C*3), per offset pair a filter ordered (ky, kx, c, out): channels-last
                  (the exporter permutes the weight predictor's output rows from the official (c, ky, kx, out))
  2 ``row_src``   int64 (H,)  source row per output row, in [0, h)
  3 ``row_idx``   int64 (H,)  row-offset index per output row, in [0, P_r)
  4 ``col_src``   int64 (W,)  likewise for columns
  5 ``col_idx``   int64 (W,)
  6 ``row_group_src``      int64 (P_r, M) source rows of the output rows of each row offset (padded)
  7 ``row_pick``           int64 (H,)    each output row's entry in the flattened (P_r, M) grouping
  8 ``col_groups``         int64 (G, X)  input columns grouped by the column offsets they host
  9 ``col_group_offsets``  int64 (G, K)  those offsets, per group
 10 ``col_pick``           int64 (W,)    each output column's entry in the flattened (G, X, K) grouping
                  (6-10 are derived from 2-5 on the host by ``metasr.runtime.feeds``; they serve the
                  standard-op body, a plugin may ignore them)
output
  0 ``out``       float (N, 3, H, W): out[n, o, i, j] = sum over c, ky, kx of
                  F_pad[n, c, row_src[i] + ky, col_src[j] + kx] * weights[row_idx[i], col_idx[j], ky, kx, c, o]
                  with F zero-padded by one pixel.

The body never builds a per-output-pixel weight tensor. The padded features go channels-last once, with their
three column shifts side by side and their columns arranged by group: (N, h+2, G, X, 3C), input-sized.
Output rows are grouped by row offset (P_r groups of M rows). Per kernel row ky, each output row gathers its
source row (N, P_r, M, G, X, 3C) and each column group is contracted with the filters of exactly the column
offsets it hosts, one filter set per (row offset, column group) broadcast over the group's rows
((N, P_r, M, G, X, 3C) @ (P_r, 1, G, 3C, K*3)); the three partial sums are added and each output pixel picks
its entry by row and by column. The arithmetic is the exact work times K / r (K = the most outputs one input
column hosts) plus row padding. Memory: about 3 * (H*G*X*3C + H*G*X*K*3) floats plus the (P_r, 9C, G*K*3)
filters, bounded by tiling the output rows.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from metasr.kernels.spec import INPUT_PARAMS

__all__ = [
    "AOT",
    "DOMAIN",
    "NODE_ATTRIBUTES",
    "OP_TYPE",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "function_proto",
    "make_node",
    "name_nodes",
]

DOMAIN = "metasr"
OP_TYPE = "MetaUpscale"
PLUGIN_NAMESPACE = "metasr"
PLUGIN_VERSION = "1"
AOT = 1  # TensorRT: 1 = strict ahead-of-time plugin implementation, 0 = strict JIT (Python at run time)
INPUTS = INPUT_PARAMS  # the 11 inputs, in order (one list for the op, the kernel and the plugin)
OUTPUTS = ("out",)


NODE_ATTRIBUTES = {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION, "aot": AOT}


def make_node(inputs: list[str], output: str, name: str = "meta_upscale") -> onnx.NodeProto:
    """The ``MetaUpscale`` node with exactly the attributes TensorRT's ONNX parser maps (see NODE_ATTRIBUTES)."""
    return helper.make_node(OP_TYPE, inputs, [output], name=name, domain=DOMAIN, **NODE_ATTRIBUTES)


def name_nodes(nodes: list[onnx.NodeProto], prefix: str = "") -> None:
    """Give every unnamed node the name ``prefix + its first output`` (outputs are unique, so names are too).

    Tools that rewrite graphs derive new node names from the existing ones (``onnxconverter_common``'s FP16
    conversion names its Casts after the node they serve: unnamed nodes gave duplicate names, an invalid graph).
    """
    for node in nodes:
        if not node.name:
            node.name = prefix + node.output[0]


def _const(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    )


def function_proto(opset: int) -> onnx.FunctionProto:
    """The standard-op body of ``MetaUpscale`` (ONNX opset ``opset`` >= 13)."""
    const = {"c0": [0], "c1": [1], "c2": [2], "c3": [3], "cm1": [-1], "pads": [0, 0, 1, 1, 0, 0, 1, 1]}
    n = [_const(k, v) for k, v in const.items()]
    mk = helper.make_node
    # sizes; padded features channels-last with their three kx shifts side by side, columns arranged by group
    n += [
        mk("Shape", ["features"], ["f_shape"]),
        mk("Gather", ["f_shape", "c1"], ["C"], axis=0),
        mk("Gather", ["f_shape", "c3"], ["w"], axis=0),
        mk("Shape", ["weights"], ["wt_shape"]),
        mk("Gather", ["wt_shape", "c1"], ["P_c"], axis=0),
        mk("Pad", ["features", "pads"], ["fp"], mode="constant"),  # (N, C, h+2, w+2)
        mk("Transpose", ["fp"], ["fpt"], perm=[0, 2, 3, 1]),  # (N, h+2, w+2, C)
    ]
    for kx in range(3):
        n += [
            mk("Add", ["w", f"c{kx}"], [f"end{kx}"]),
            mk("Slice", ["fpt", f"c{kx}", f"end{kx}", "c2"], [f"shift{kx}"]),  # (N, h+2, w, C)
        ]
    n += [
        mk("Concat", ["shift0", "shift1", "shift2"], ["x3"], axis=3),  # (N, h+2, w, 3C), (kx, c)
        mk("Gather", ["x3", "col_groups"], ["xg"], axis=2),  # (N, h+2, G, X, 3C), input-sized
    ]
    # filters per (row offset, kernel row, column group): (P_r, 3, G, 3C, K*3)
    n += [
        mk("Mul", ["C", "c3"], ["C3"]),
        mk("Concat", ["cm1", "P_c", "c3", "C3", "c3"], ["w5_shape"], axis=0),
        mk("Reshape", ["weights", "w5_shape"], ["w5"]),  # (P_r, P_c, ky, 3C, o), 3C = (kx, c)
        mk("Gather", ["w5", "col_group_offsets"], ["wg"], axis=1),  # (P_r, G, K, ky, 3C, o)
        mk("Transpose", ["wg"], ["wgt"], perm=[0, 3, 1, 4, 2, 5]),  # (P_r, ky, G, 3C, K, o)
        mk("Shape", ["col_group_offsets"], ["gk"]),
        mk("Gather", ["gk", "c0"], ["G"], axis=0),
        mk("Gather", ["gk", "c1"], ["K"], axis=0),
        mk("Mul", ["K", "c3"], ["K3"]),
        mk("Concat", ["cm1", "c3", "G", "C3", "K3"], ["wf_shape"], axis=0),
        mk("Reshape", ["wgt", "wf_shape"], ["wf"]),  # (P_r, 3, G, 3C, K*3)
    ]
    partial = []
    for ky in range(3):
        # the output rows of each row offset read padded rows row_group_src + ky: (N, P_r, M, G, X, 3C)
        n += [
            mk("Add", ["row_group_src", f"c{ky}"], [f"rows{ky}"]),
            mk("Gather", ["xg", f"rows{ky}"], [f"strip{ky}"], axis=1),
            mk("Gather", ["wf", f"c{ky}"], [f"wk{ky}"], axis=1),  # (P_r, 1, G, 3C, K*3): the 1 broadcasts over M
            mk("MatMul", [f"strip{ky}", f"wk{ky}"], [f"part{ky}"]),  # (N, P_r, M, G, X, K*3)
        ]
        partial.append(f"part{ky}")
    n += [
        mk("Add", [partial[0], partial[1]], ["part01"]),
        mk("Add", ["part01", partial[2]], ["grouped"]),  # (N, P_r, M, G, X, K*3)
        # each output pixel picks its (row offset, row slot) and (column group, column, slot) entry
        mk("Shape", ["grouped"], ["gr_shape"]),
        mk("Slice", ["gr_shape", "c0", "c1", "c0"], ["n_dim"]),
        mk("Shape", ["row_group_src"], ["rg_shape"]),
        mk("ReduceProd", ["rg_shape"], ["PrM"], keepdims=1),
        mk("Concat", ["n_dim", "PrM", "cm1", "c3"], ["flat_shape"], axis=0),
        mk("Reshape", ["grouped", "flat_shape"], ["flat"]),  # (N, P_r*M, G*X*K, 3)
        mk("Gather", ["flat", "row_pick"], ["rows_picked"], axis=1),  # (N, H, G*X*K, 3)
        mk("Gather", ["rows_picked", "col_pick"], ["picked"], axis=2),  # (N, H, W, 3)
        mk("Transpose", ["picked"], ["out"], perm=[0, 3, 1, 2]),  # (N, 3, H, W)
    ]
    name_nodes(n, prefix=f"{OP_TYPE}/")
    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        list(INPUTS),
        list(OUTPUTS),
        n,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=list(NODE_ATTRIBUTES),
    )
