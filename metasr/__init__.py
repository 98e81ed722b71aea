"""metasr: Meta-SR arbitrary-scale super-resolution, from PyTorch training to ONNX Runtime / TensorRT.

The public API is imported lazily so that ``import metasr.runtime`` works with numpy + onnxruntime alone
(no PyTorch): ``metasr.load_model``, ``metasr.MetaSR``, ``metasr.ModelConfig``, ``metasr.preset`` ...

Privacy: importing metasr sets ``ORT_DISABLE_TELEMETRY=1`` unless the variable is already set. ONNX Runtime
reads it when it is imported (by metasr or by any tool metasr loads): with it, ONNX Runtime neither starts its
telemetry nor writes ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db``. Set it to ``0``
before starting Python to opt in.
"""

from __future__ import annotations

import os

from metasr.lazy import lazy_getattr

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

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
__getattr__ = lazy_getattr(__name__, _EXPORTS)
