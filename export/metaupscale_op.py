"""The ``MetaUpscale`` custom op: its contract, its node and its function (body: ``metaupscale_body``).

Contract (one node, domain ``metasr``, op_type ``MetaUpscale``, attributes ``plugin_namespace="metasr"``,
``plugin_version="1"`` and ``aot=1``; TensorRT >= 10.7 maps it to the registered plugin, other consumers run
the body). ``aot=1`` asks TensorRT's parser for the plugin's ahead-of-time implementation (the kernel's PTX
stored in the engine, so the engine runs without Python); the body ignores all three attributes.

inputs (:data:`metasr.kernels.spec.INPUT_PARAMS`, one list for the op, the kernel and the plugin)
  0 ``features``    float (N, C, h, w)
  1 ``weights``     float (P_r, P_c, 9*C*3), per offset pair a filter ordered (ky, kx, c, out): channels-last
                    (the exporter permutes the weight predictor's output rows from the official (c, ky, kx, out))
  2 ``row_src``     int64 (H,)  source row per output row, in [0, h)
  3 ``row_idx``     int64 (H,)  row-offset index per output row, in [0, P_r)
  4 ``col_src``     int64 (W,)  likewise for columns
  5 ``col_idx``     int64 (W,)
  6 ``row_groups``  int64 (G_r, L_r) per group of input rows, per member: an output row that member hosts
  7 ``row_slots``   int64 (G_r, K_r) per group, per slot: an output row with that slot's row offset
  8 ``row_pick``    int64 (H,)       output row i's entry (a * L_r + l) * K_r + k of the (G_r, L_r, K_r) grid
  9 ``col_groups``  int64 (G_c, L_c) likewise for columns
 10 ``col_slots``   int64 (G_c, K_c)
 11 ``col_pick``    int64 (W,)
                    (6-11 are the grouping hints of ``metasr.runtime.feeds``, which defines when they are valid;
                    they refer to output positions, so the body reads inputs 2-5 through them and every input
                    of the function is read by its body: graph tools such as onnxslim that prune unread
                    function inputs leave the node intact)
output
  0 ``out``         float (N, 3, H, W): out[n, o, i, j] = sum over c, ky, kx of
                    F_pad[n, c, row_src[i] + ky, col_src[j] + kx] * weights[row_idx[i], col_idx[j], ky, kx, c, o]
                    with F zero-padded by one pixel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metasr.export import onnx_proto
from metasr.export.metaupscale_body import body_nodes, name_nodes
from metasr.export.metaupscale_nchwc import NCHWC_DOMAIN

if TYPE_CHECKING:
    import onnx

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
INPUTS = INPUT_PARAMS  # the 12 inputs, in order (one list for the op, the kernel and the plugin)
OUTPUTS = ("out",)


NODE_ATTRIBUTES = {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION, "aot": AOT}


def make_node(inputs: list[str], output: str, name: str = "meta_upscale") -> onnx.NodeProto:
    """The ``MetaUpscale`` node with exactly the attributes TensorRT's ONNX parser maps (see NODE_ATTRIBUTES)."""
    return onnx_proto.make_node(OP_TYPE, inputs, [output], name=name, domain=DOMAIN, **NODE_ATTRIBUTES)


def function_proto(opset: int, nchwc_block: int | None = None) -> onnx.FunctionProto:
    """The standard-op body of ``MetaUpscale`` (ONNX opset ``opset`` >= 15: ``CastLike``) as a model-local
    function; with ``nchwc_block``, ONNX Runtime's CPU variant (:mod:`metasr.export.metaupscale_nchwc`, with its
    interleave by ``Col2Im`` at opset >= 18: the runtime builds it, the exporter never writes it)."""
    imports = [onnx_proto.make_opsetid("", opset)]
    if nchwc_block is not None:
        imports.append(onnx_proto.make_opsetid(NCHWC_DOMAIN, 1))
    return onnx_proto.make_function(
        DOMAIN,
        OP_TYPE,
        list(INPUTS),
        list(OUTPUTS),
        body_nodes(nchwc_block, col2im=nchwc_block is not None and opset >= 18),
        opset_imports=imports,
        attributes=list(NODE_ATTRIBUTES),
    )
