"""metasr: Meta-SR arbitrary-scale super-resolution, from PyTorch training to ONNX Runtime / TensorRT.

The public API is imported lazily so that ``import metasr.runtime`` works with numpy + onnxruntime alone
(no PyTorch): ``metasr.load_model``, ``metasr.MetaSR``, ``metasr.ModelConfig``, ``metasr.preset`` ...
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "MetaSR": "metasr.model",
    "ModelConfig": "metasr.config",
    "PRESETS": "metasr.config",
    "preset": "metasr.config",
    "load_model": "metasr.checkpoint",
    "save_model": "metasr.checkpoint",
    "CheckpointError": "metasr.checkpoint",
    "UnsupportedScaleError": "metasr.runtime.projection",
    "project": "metasr.runtime.projection",
    "bundled_model_path": "metasr.bundled",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'metasr' has no attribute {name!r}")
