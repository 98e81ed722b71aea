"""The upscale graph cut at the ``MetaUpscale`` node's filters: a weight-predictor graph and a body graph, so a
runtime can compute a plan's filter table once and feed it to every tile (:class:`FilterCache`).

The weight predictor maps the plan's offsets (``inv_scale`` (1,), ``row_offsets`` (P_r,), ``col_offsets``
(P_c,)) to the filter table ``weights`` (P_r, P_c, 27C): input 1 of ``MetaUpscale``. It reads no features, so
every tile of a plan that feeds the same offsets gets the same table, yet the graph as exported computes it in
every call: at x3.3 (P = 33 x 33 pairs) a (1089 x 256) x (256 x 864) matrix product, about 3 ms of CPU time per
call on the project's 2-core machine, as much as a 200 x 200 pixel tile's convolutions.

:func:`split_predictor` takes a graph's bytes and returns the two graphs (:class:`PredictorSplit`): the
predictor, every node the table depends on (it must read graph inputs other than ``features`` only, and nothing
else may read its intermediate values), and the body, every other node, with the table as a graph input of the
same name; or a one-line reason it does not apply. Both keep the model's opsets and functions; initializers go
where they are read. The two together compute what the graph does, with the same nodes: the outputs are
bit-identical (``tests/test_predictor_split.py``).

:class:`FilterCache` holds the last table computed, keyed by the predictor's inputs (their bytes): a thread
asking for another plan's table computes it and replaces the entry, so the cache holds one table (what one
call of the graph holds anyway, ``tiling.tile_bytes`` counts it per pair). Threads share it safely: a table is
computed outside the lock (the old one dropped first), and two threads missing at once both compute (same
values). The predictor's session runs without ONNX Runtime's memory arena (its buffers are freed after each
run, not held beside the body's arena; a plan with per-tile tables runs it in every call, as before).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from metasr.export.onnx_proto import ProtoUnavailable, make_tensor_value_info, protos

__all__ = ["ENV", "FilterCache", "PredictorSplit", "split_predictor", "split_upscale"]

ENV = "METASR_ORT_FILTER_CACHE"

_OP = ("metasr", "MetaUpscale")


@dataclass(frozen=True)
class PredictorSplit:
    """The two graphs (serialized ModelProtos), the predictor's graph inputs in order, and the table's name."""

    predictor: bytes
    body: bytes
    inputs: tuple[str, ...]
    table: str


def _has_graph(node: object) -> bool:
    return any(a.HasField("g") or len(a.graphs) for a in node.attribute)


def _table_type(g: object, table: str, producer: object) -> int | None:
    """The table's element type: declared (value_info), else a ``Cast``'s target (FP16 graphs cast the
    predictor's float32 output to float16 before ``MetaUpscale``), else the ``features`` input's."""
    for v in (*g.value_info, *g.output):
        if v.name == table and v.type.tensor_type.elem_type:
            return int(v.type.tensor_type.elem_type)
    if producer.op_type == "Cast":
        return next(int(a.i) for a in producer.attribute if a.name == "to")
    return next((int(v.type.tensor_type.elem_type) for v in g.input if v.name == "features"), None)


def split_predictor(model: bytes) -> PredictorSplit | str:
    """The predictor / body split of an upscale graph (module docstring), or why it does not apply."""
    pb = protos()
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(model)
    except Exception:
        return "the graph does not parse"
    g = proto.graph
    nodes = list(g.node)
    ops = [n for n in nodes if (n.domain, n.op_type) == _OP]
    if len(ops) != 1 or len(ops[0].input) < 2:
        return "not one MetaUpscale node"
    table = ops[0].input[1]
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    ancestors: set[int] = set()
    todo = [table]
    while todo:
        i = producer.get(todo.pop())
        if i is not None and i not in ancestors:
            ancestors.add(i)
            todo.extend(nodes[i].input)
    if not ancestors:
        return "the filter table is not computed in the graph"
    graph_inputs = list(g.input)
    read = {x for i in ancestors for x in nodes[i].input}
    pred_inputs = [v for v in graph_inputs if v.name in read]
    constants = {t.name for t in g.initializer}  # inputs with an initializer (an exporter's option): not fed
    fed = tuple(v.name for v in pred_inputs if v.name not in constants)
    if "features" in fed or not fed:
        return "the filter table reads the features (or no graph input)"
    if any(_has_graph(nodes[i]) for i in ancestors):
        return "the predictor has control flow"
    made = {out for i in ancestors for out in nodes[i].output}
    rest = [n for i, n in enumerate(nodes) if i not in ancestors]
    if any(x in made and x != table for n in rest for x in n.input) or any(o.name in made for o in g.output):
        return "the predictor's values are read elsewhere"
    if any(_has_graph(n) for n in rest):
        return "the body has control flow outside MetaUpscale"
    rest_read = {x for n in rest for x in n.input}
    if any(v.name in rest_read for v in pred_inputs):
        return "the predictor's inputs are read elsewhere"

    float_type = _table_type(g, table, nodes[producer[table]])
    if float_type is None:
        return "the graph has no features input"

    def model_of(graph: object, functions: bool) -> bytes:
        m = pb.ModelProto()
        m.CopyFrom(proto)
        m.graph.CopyFrom(graph)
        if not functions:
            del m.functions[:]
        return m.SerializeToString()

    pred = pb.GraphProto(name=f"{g.name}_predictor")
    pred.node.extend(nodes[i] for i in sorted(ancestors))
    pred.input.extend(pred_inputs)
    pred.output.append(make_tensor_value_info(table, float_type, ["P_r", "P_c", "K"]))
    pred.initializer.extend(t for t in g.initializer if t.name in read)
    body = pb.GraphProto(name=f"{g.name}_body")
    body.node.extend(rest)
    body.input.extend(v for v in graph_inputs if v.name not in read or v.name in rest_read)
    body.input.append(make_tensor_value_info(table, float_type, ["P_r", "P_c", "K"]))
    body.output.extend(g.output)
    body.initializer.extend(t for t in g.initializer if t.name in rest_read)
    return PredictorSplit(model_of(pred, functions=False), model_of(body, functions=True), fed, table)


def split_upscale(model: bytes) -> PredictorSplit | str:
    """:func:`split_predictor` for a runtime: only graphs with a ``MetaUpscale`` node (others are not parsed),
    not where ``METASR_ORT_FILTER_CACHE=0`` (measurements) or the ``onnx`` package (its protobuf classes) is
    missing."""
    if b"MetaUpscale" not in model:
        return "no MetaUpscale node"
    if os.environ.get(ENV, "1") == "0":
        return f"{ENV}=0"
    try:
        return split_predictor(model)
    except ProtoUnavailable as e:
        return str(e)


class FilterCache:
    """The last filter table and its key (module docstring); ``compute(feeds) -> table`` runs the predictor."""

    def __init__(self, inputs: tuple[str, ...], compute: Callable[[dict[str, np.ndarray]], np.ndarray]) -> None:
        self.inputs = inputs
        self._compute = compute
        self._lock = threading.Lock()
        self._entry: tuple[tuple, np.ndarray] | None = None
        self.hits = 0
        self.misses = 0

    def table(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The table for these feeds' predictor inputs (computed, or the cached one when they are the same)."""
        key = tuple((feeds[n].dtype.str, feeds[n].shape, feeds[n].tobytes()) for n in self.inputs)
        with self._lock:
            if self._entry is not None and self._entry[0] == key:
                self.hits += 1
                return self._entry[1]
            self.misses += 1
            self._entry = None  # the old table is not kept alive while the new one is computed
        table = self._compute({n: feeds[n] for n in self.inputs})
        table.setflags(write=False)  # shared by every call that hits: nobody may change it
        with self._lock:
            self._entry = (key, table)
        return table

    def clear(self) -> None:
        with self._lock:
            self._entry = None
