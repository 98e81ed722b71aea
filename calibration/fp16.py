"""FP16 graphs: float16 weights and arithmetic, float32 inputs and outputs, sensitive parts kept in float32.

Made with ``onnxconverter_common``'s converter (``keep_io_types``: Casts at the graph boundary, so the
runtime feeds and reads float32 exactly as for the FP32 graphs). TensorRT >= 11 takes FP16 only from the
types in the graph (strongly typed networks), so this is the FP16 artifact for GPUs; ONNX Runtime's CPU
provider runs it too (casting back where it lacks float16 kernels), which is how it is verified here.

Kept in float32 by default: the upscale graph's weight predictor, i.e. every node computed from the plan
inputs only and not from the features (its inputs are sub-pixel offsets, whose float16 rounding would move
every predicted filter; it runs on the P_r x P_c distinct offset pairs only, so its cost is negligible). The
``MetaUpscale`` node keeps its function body (the body's operators are type-polymorphic) and ``add_mean``
runs in float16.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection

import onnx

__all__ = ["convert_fp16", "plan_only_nodes"]


def plan_only_nodes(model: onnx.ModelProto, data_input: str = "features") -> list[str]:
    """Names of the nodes that do not depend on ``data_input`` (the weight predictor of the upscale graph)."""
    tainted = {data_input}
    names = []
    for n in model.graph.node:
        if tainted.intersection(n.input):
            tainted.update(n.output)
        else:
            names.append(n.name)
    return names


def convert_fp16(model: onnx.ModelProto, keep_float32: Collection[str] = ()) -> onnx.ModelProto:
    """``model`` in float16 with float32 I/O; the nodes named in ``keep_float32`` stay float32.

    Every node must have a unique name (the converter names its Casts after them; the exporter names all).
    """
    from onnxconverter_common import float16

    names = [n.name for n in model.graph.node]
    if "" in names or len(set(names)) != len(names):
        raise ValueError("every node needs a unique name for the FP16 conversion (re-export the artifacts)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about values it clamps into float16's range
        return float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=list(keep_float32))
