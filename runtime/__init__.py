"""Torch-free inference (numpy + onnxruntime): projection, manifest, backends, tiling, pipeline, image I/O."""

from metasr.runtime.projection import (
    DEFAULT_MAX_SCALE,
    ProjectionPlan,
    UnsupportedScaleError,
    check_scale,
    output_size,
    project,
)

__all__ = ["DEFAULT_MAX_SCALE", "ProjectionPlan", "UnsupportedScaleError", "check_scale", "output_size", "project"]
