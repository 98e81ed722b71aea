"""The upscale graph: weight predictor on the distinct offset pairs, ``MetaUpscale``, ``add_mean`` (folded).

Built directly with ``onnx.helper`` from the model's tensors, so the custom node, its attributes and its
function body are exactly the contract in :mod:`metasr.export.metaupscale_op`.

inputs   ``features`` float32 (N, C, h, w) and the plan arrays of :data:`metasr.runtime.feeds.UPSCALE_PLAN_INPUTS`
output   ``sr`` float32 (N, 3, H, W), H = len(row_src), W = len(col_src); 0..255 scale, unclamped
"""

from __future__ import annotations

import numpy as np
import onnx
from metasr.export import metaupscale_op as op
from metasr.runtime.feeds import UPSCALE_PLAN_INPUTS
from onnx import TensorProto, helper, numpy_helper

from metasr.model import MetaSR

__all__ = ["build_upscale_graph"]

_DTYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _filter_order(c: int) -> np.ndarray:
    """Index mapping (ky, kx, c, o)-ordered positions to the official (c, ky, kx, o) order."""
    return np.arange(c * 27).reshape(c, 3, 3, 3).transpose(1, 2, 0, 3).reshape(-1)


def _fold_mean(rows: np.ndarray, mean_w: np.ndarray) -> np.ndarray:
    """Predictor output rows (..., 27C) ordered (ky, kx, c, o) with add_mean's 3x3 channel mixing applied to the
    out channel: ``add_mean(contract(F, w)) = contract(F, w @ M^T) + bias`` (both linear), in float64."""
    m = mean_w[:, :, 0, 0].astype(np.float64)  # (o', o)
    return (rows.astype(np.float64).reshape(*rows.shape[:-1], -1, 3) @ m.T).reshape(rows.shape)


def build_upscale_graph(model: MetaSR, opset: int = 17) -> onnx.ModelProto:
    """The upscale graph of ``model`` (weights copied from the model, float32).

    add_mean's 3x3 channel mixing is folded into the predictor's last layer (exact algebra, float64 then
    float32), so the graph ends with ``MetaUpscale`` and one bias ``Add``: a 3-channel 1x1 convolution over the
    whole output cost ONNX Runtime as much as 60% of the upscale convolution itself (its NCHWc layout pass).
    """
    c = model.config.features
    p2w = model.P2W.meta_block
    mean_w = model.add_mean.weight.detach().cpu().numpy()  # (3, 3, 1, 1)
    t = {
        "w1": p2w[0].weight.detach().cpu().numpy().T,  # (3, hidden)
        "b1": p2w[0].bias.detach().cpu().numpy(),
        # output rows reordered from the official (c, ky, kx, o) to the op's (ky, kx, c, o) filter layout
        "w2": _fold_mean(p2w[2].weight.detach().cpu().numpy()[_filter_order(c)].T, mean_w),  # (hidden, C*27)
        "b2": _fold_mean(p2w[2].bias.detach().cpu().numpy()[_filter_order(c)], mean_w),
        "mean_b": model.add_mean.bias.detach().cpu().numpy().reshape(1, 3, 1, 1),
        "shape_pos": np.array([1, 1, 1], dtype=np.int64),
        "shape_row": np.array([-1, 1, 1], dtype=np.int64),
        "shape_col": np.array([1, -1, 1], dtype=np.int64),
        "one": np.array([1], dtype=np.int64),
    }
    inits = [_init(k, v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in t.items()]
    nodes = [
        # pair grid (P_r, P_c, 3) of [1/r, row offset, col offset]
        helper.make_node("Shape", ["row_offsets"], ["pr"]),
        helper.make_node("Shape", ["col_offsets"], ["pc"]),
        helper.make_node("Concat", ["pr", "pc", "one"], ["grid_shape"], axis=0),
        helper.make_node("Reshape", ["inv_scale", "shape_pos"], ["s3"]),
        helper.make_node("Reshape", ["row_offsets", "shape_row"], ["r3"]),
        helper.make_node("Reshape", ["col_offsets", "shape_col"], ["c3"]),
        helper.make_node("Expand", ["s3", "grid_shape"], ["s_grid"]),
        helper.make_node("Expand", ["r3", "grid_shape"], ["r_grid"]),
        helper.make_node("Expand", ["c3", "grid_shape"], ["c_grid"]),
        helper.make_node("Concat", ["s_grid", "r_grid", "c_grid"], ["pos"], axis=2),  # (P_r, P_c, 3)
        # weight predictor: Linear(3, hidden) -> ReLU -> Linear(hidden, C*27)
        helper.make_node("MatMul", ["pos", "w1"], ["h_pre"]),
        helper.make_node("Add", ["h_pre", "b1"], ["h_bias"]),
        helper.make_node("Relu", ["h_bias"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["w_pre"]),
        helper.make_node("Add", ["w_pre", "b2"], ["weights"]),  # (P_r, P_c, 27C) as (ky, kx, c, o), mixing folded
        op.make_node(["features", "weights", *op.INPUTS[2:]], "upscaled"),
        helper.make_node("Add", ["upscaled", "mean_b"], ["sr"], name="add_mean"),
    ]
    op.name_nodes(nodes)  # unique node names: graph rewriters (FP16 conversion) derive new names from them

    inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", c, "h", "w"])]
    inputs += [
        helper.make_tensor_value_info(k, _DTYPES[d], list(shape)) for k, (d, shape) in UPSCALE_PLAN_INPUTS.items()
    ]
    outputs = [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H", "W"])]
    graph = helper.make_graph(nodes, "metasr_upscale", inputs, outputs, inits)
    model_proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(op.DOMAIN, 1)],
        functions=[op.function_proto(opset)],
        producer_name="metasr",
    )
    model_proto.ir_version = min(model_proto.ir_version, 10)
    return model_proto
