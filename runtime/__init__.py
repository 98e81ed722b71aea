"""Torch-free inference pieces: projection math now; the ONNX Runtime / TensorRT pipeline follows."""

from metasr.runtime.projection import (
    DEFAULT_MAX_SCALE,
    ProjectionPlan,
    UnsupportedScaleError,
    check_scale,
    output_size,
    project,
)

__all__ = ["DEFAULT_MAX_SCALE", "ProjectionPlan", "UnsupportedScaleError", "check_scale", "output_size", "project"]
