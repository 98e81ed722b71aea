"""PyTorch -> ONNX export: a feature graph and an upscale graph with the ``MetaUpscale`` custom op."""

from metasr.export.onnx_export import DEFAULT_OPSET, ExportError, ExportResult, export_onnx

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportResult", "export_onnx"]
