"""ONNX's protobuf classes, and the few builders the ``MetaUpscale`` body needs, without importing ``onnx``.

The runtime rebuilds the body for ONNX Runtime's CPU provider (:mod:`metasr.runtime.ort_cpu`) in the processes
that load a graph: ``import onnx`` costs 0.65-1 s there (measured on the project's 2-core machine, most of it
``ml_dtypes``), more than the whole of a small upscale. Only the generated ``onnx/onnx_ml_pb2.py`` of the
installed ``onnx`` is needed; it imports nothing but ``google.protobuf`` (a dependency of ONNX Runtime too).
It is loaded under its own name ``onnx.onnx_ml_pb2``, so a later ``import onnx`` in the same process takes the
same module: one set of classes, one registration of the ``.proto`` file. Where ``onnx`` is imported already,
its module is used.

The builders produce exactly what ``onnx.helper``'s functions of the same names produce (field for field, so
byte for byte once serialized: tested against them), for the argument kinds used here: integer, string, list of
integers, graph and tensor attributes; int64 tensors.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "ProtoUnavailable",
    "make_function",
    "make_graph",
    "make_node",
    "make_opsetid",
    "make_tensor_int64",
    "make_tensor_value_info",
    "protos",
]

_NAME = "onnx.onnx_ml_pb2"


class ProtoUnavailable(ImportError):
    """The ``onnx`` package (whose generated protobuf module this reads) is not installed."""


_LOCK = threading.Lock()


def protos() -> ModuleType:
    """The ``onnx_ml_pb2`` module: ``onnx``'s own when it is imported, else loaded alone (see the docstring).
    Thread-safe (threads creating backends at once wait for one load); any failure to load it (no ``onnx``, a
    ``protobuf`` older than its generated code needs) is :class:`ProtoUnavailable`."""
    with _LOCK:
        module = sys.modules.get(_NAME)
        if module is not None and hasattr(module, "ModelProto"):  # loaded (not another thread's half-load)
            return module
        try:
            spec = importlib.util.find_spec("onnx")  # finds the package without importing it
        except (ImportError, ValueError) as e:
            raise ProtoUnavailable(f"the onnx package is not installed ({e})") from None
        if spec is None or not spec.submodule_search_locations:
            raise ProtoUnavailable("the onnx package is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / "onnx_ml_pb2.py"
        pb_spec = importlib.util.spec_from_file_location(_NAME, path)
        if pb_spec is None or pb_spec.loader is None or not path.is_file():
            raise ProtoUnavailable(f"the onnx package has no {path.name}")
        module = importlib.util.module_from_spec(pb_spec)
        sys.modules[_NAME] = module
        try:
            pb_spec.loader.exec_module(module)
        except Exception as e:  # e.g. protobuf's VersionError: a runtime older than the generated code
            del sys.modules[_NAME]
            first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise ProtoUnavailable(f"onnx's protobuf module does not load ({first})") from None
        except BaseException:
            del sys.modules[_NAME]
            raise
        return module


def _attribute(name: str, value: Any) -> Any:
    pb = protos()
    attr = pb.AttributeProto(name=name)
    if isinstance(value, bool) or not isinstance(value, (int, str, bytes, list, tuple, pb.GraphProto, pb.TensorProto)):
        raise TypeError(f"attribute {name}: unsupported value {value!r}")
    if isinstance(value, int):
        attr.i, attr.type = value, pb.AttributeProto.INT
    elif isinstance(value, (str, bytes)):
        attr.s, attr.type = value.encode() if isinstance(value, str) else value, pb.AttributeProto.STRING
    elif isinstance(value, pb.GraphProto):
        attr.g.CopyFrom(value)
        attr.type = pb.AttributeProto.GRAPH
    elif isinstance(value, pb.TensorProto):
        attr.t.CopyFrom(value)
        attr.type = pb.AttributeProto.TENSOR
    else:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"attribute {name}: only lists of integers are supported, got {value!r}")
        attr.ints.extend(value)
        attr.type = pb.AttributeProto.INTS
    return attr


def make_node(
    op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None,
    domain: str | None = None, **attributes: Any,
) -> Any:  # fmt: skip
    """``onnx.helper.make_node`` for the attribute kinds above (attributes sorted by name, as there)."""
    node = protos().NodeProto(op_type=op_type)
    node.input.extend(inputs)
    node.output.extend(outputs)
    if name:
        node.name = name
    if domain is not None:
        node.domain = domain
    node.attribute.extend(_attribute(k, v) for k, v in sorted(attributes.items()) if v is not None)
    return node


def make_graph(nodes: Sequence[Any], name: str, inputs: Sequence[Any], outputs: Sequence[Any]) -> Any:
    graph = protos().GraphProto(name=name)
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    graph.output.extend(outputs)
    return graph


def make_tensor_int64(name: str, dims: Sequence[int], values: Sequence[int]) -> Any:
    """``onnx.helper.make_tensor(name, INT64, dims, values)``."""
    pb = protos()
    tensor = pb.TensorProto(data_type=pb.TensorProto.INT64, name=name)
    tensor.int64_data.extend(values)
    tensor.dims.extend(dims)
    return tensor


def make_tensor_value_info(name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> Any:
    """``onnx.helper.make_tensor_value_info``: a tensor of ``elem_type``; ``shape`` None: unknown rank."""
    info = protos().ValueInfoProto(name=name)
    tensor = info.type.tensor_type
    tensor.elem_type = elem_type
    if shape is not None:
        tensor.shape.SetInParent()  # a known rank, also for rank 0
        for d in shape:
            dim = tensor.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
    return info


def make_opsetid(domain: str, version: int) -> Any:
    return protos().OperatorSetIdProto(domain=domain, version=version)


def make_function(
    domain: str, name: str, inputs: Sequence[str], outputs: Sequence[str], nodes: Sequence[Any],
    opset_imports: Sequence[Any], attributes: Sequence[str],
) -> Any:  # fmt: skip
    fn = protos().FunctionProto(domain=domain, name=name)
    fn.input.extend(inputs)
    fn.output.extend(outputs)
    fn.node.extend(nodes)
    fn.opset_import.extend(opset_imports)
    fn.attribute.extend(attributes)
    return fn
