"""The feature graph: mean shift + backbone, exported with PyTorch's TorchScript-based ONNX exporter.

input ``lr`` float32 (1, 3, h, w) on the 0..255 scale; output ``features`` float32 (1, C, h, w).
h and w are dynamic by default, or fixed for static engines.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

from metasr.model import MetaSR

__all__ = ["export_feature_graph"]


class _Encode(nn.Module):
    def __init__(self, model: MetaSR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.model.encode(lr)


def export_feature_graph(model: MetaSR, opset: int = 17, lr_size: tuple[int, int] | None = None) -> onnx.ModelProto:
    """Export ``model.encode``; ``lr_size`` (h, w) makes the graph static, None keeps h/w dynamic."""
    h, w = lr_size or (32, 32)
    example = torch.rand(1, 3, h, w) * 255
    dynamic = None if lr_size else {"lr": {2: "h", 3: "w"}, "features": {2: "h", 3: "w"}}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(
            _Encode(model).eval(),
            (example,),
            buf,
            input_names=["lr"],
            output_names=["features"],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.graph.name = "metasr_feature"
    proto.producer_name = "metasr"
    return proto
