"""PyTorch -> ONNX export: a feature graph and an upscale graph with the ``MetaUpscale`` custom op.

The names below load :mod:`metasr.export.onnx_export` (and PyTorch) on first use, so that the graph builders
without PyTorch (``metaupscale_op`` and its body, which the runtime's ONNX Runtime CPU backend rebuilds with its
NCHWc kernels) import in the torch-free runtime.
"""

from __future__ import annotations

from metasr.lazy import lazy_getattr

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportResult", "export_onnx"]
__getattr__ = lazy_getattr(__name__, dict.fromkeys(__all__, "metasr.export.onnx_export"))
