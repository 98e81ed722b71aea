"""PyTorch -> ONNX export: a feature graph and an upscale graph with the ``MetaUpscale`` custom op.

The names below load :mod:`metasr.export.onnx_export` (and PyTorch) on first use, so that the graph builders
without PyTorch (``metaupscale_op`` and its body, which the runtime's ONNX Runtime CPU backend rebuilds with its
NCHWc kernels) import in the torch-free runtime.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportResult", "export_onnx"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from metasr.export import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module 'metasr.export' has no attribute {name!r}")
