"""A manifest's fields checked, alone and against each other and the graphs they describe (stdlib only).

:func:`check_extra`, :func:`check_model` and :func:`check_version` check single fields (types and ranges);
:func:`check_consistency` runs whenever a :class:`~metasr.runtime.manifest.Manifest` is built, after the
per-field type checks. What the runtime acts on must agree with what the graphs are:

* the model config is a valid :class:`~metasr.config.ModelConfig` whose backbone the runtime knows;
* every feature graph records the receptive radius of that backbone (the overlap of its feature tiles: a
  smaller one gives seams, with exit 0), and an ONNX one its working memory per input pixel (the memory
  bound of ``metasr upscale`` is planned with it);
* a feature graph's input is ``(1, 3, h, w)``: ``h, w`` are the recorded ``lr_size`` when it has one (a static
  graph) and symbolic otherwise; its output and the upscale graphs' feature input have the model's channels.

The backends then check the declared inputs and outputs against the graph they load
(:func:`metasr.runtime.backends.check_graph_io`), closing the loop from the manifest to the bytes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from metasr.runtime.manifest import (
    MAX_SCALE_LIMIT,
    MAX_WORK_BYTES_PER_PIXEL,
    PRECISIONS,
    SCHEMA_VERSION,
    ManifestError,
    _expect,
    _is_int,
    _is_number,
)

from metasr.config import ModelConfig, receptive_radius

if TYPE_CHECKING:
    from metasr.runtime.manifest import GraphSpec, Manifest

__all__ = ["check_consistency", "check_extra", "check_model", "check_version"]


def check_consistency(manifest: Manifest) -> None:
    """Raise :class:`~metasr.runtime.manifest.ManifestError` where the fields disagree (see the module)."""
    try:
        config = ModelConfig(**manifest.model)
        radius = receptive_radius(config.backbone, config.backbone_params)
    except (TypeError, ValueError) as e:
        raise ManifestError(f"model: {str(e).splitlines()[0]}") from None
    for g in manifest.graphs:
        if g.kind == "feature":
            _check_feature(g, config.features, radius)
        elif g.kind.startswith("upscale"):
            _check_channels(g, "features", g.inputs, config.features)


def _check_feature(g: GraphSpec, channels: int, radius: int) -> None:
    recorded = g.extra.get("receptive_radius")
    if recorded != radius:
        raise ManifestError(
            f"{g.file}: receptive_radius is {recorded!r}, the model's backbone has {radius} (manifest edited?)"
        )
    if g.format == "onnx" and "work_bytes_per_pixel" not in g.extra:
        raise ManifestError(f"{g.file}: work_bytes_per_pixel is missing (re-export or re-calibrate)")
    lr = _tensor(g, g.inputs, "lr")
    if len(lr.shape) != 4 or tuple(lr.shape[:2]) != (1, 3):
        raise ManifestError(f"{g.file}: input lr must be (1, 3, h, w), got {lr.shape}")
    size = g.extra.get("lr_size")
    dims = lr.shape[2:]
    if size is not None and tuple(dims) != tuple(size):
        raise ManifestError(f"{g.file}: lr_size {list(size)} differs from the graph's input dims {list(dims)}")
    if size is None and any(isinstance(d, int) for d in dims):
        raise ManifestError(f"{g.file}: static input dims {list(dims)} but no lr_size recorded")
    _check_channels(g, "features", g.outputs, channels)


def _check_channels(g: GraphSpec, name: str, tensors, channels: int) -> None:
    t = _tensor(g, tensors, name)
    if len(t.shape) != 4 or t.shape[1] != channels:
        raise ManifestError(f"{g.file}: {name} must have {channels} channels (the model's), got shape {t.shape}")


def _tensor(g: GraphSpec, tensors, name: str):
    for t in tensors:
        if t.name == name:
            return t
    raise ManifestError(f"{g.file}: no tensor named {name!r} among {[t.name for t in tensors]}")


def check_extra(file: str, extra: dict[str, Any]) -> None:
    """The extras the runtime reads: ``receptive_radius`` (int >= 0), ``lr_size`` ([h, w], positive ints),
    ``upscale_precision`` (a precision: the upscale graph an INT8 feature graph goes with),
    ``work_bytes_per_pixel`` (a feature graph's working memory per input pixel, positive)."""
    if "work_bytes_per_pixel" in extra:
        b = extra["work_bytes_per_pixel"]
        ok = _is_number(b) and math.isfinite(b) and 0 < b <= MAX_WORK_BYTES_PER_PIXEL
        _expect(ok, f"{file}: work_bytes_per_pixel must be a number in (0, {MAX_WORK_BYTES_PER_PIXEL:g}]", b)
    if "upscale_precision" in extra:
        p = extra["upscale_precision"]
        _expect(p in PRECISIONS, f"{file}: upscale_precision must be one of {list(PRECISIONS)}", p)
    if "receptive_radius" in extra:
        r = extra["receptive_radius"]
        _expect(_is_int(r) and 0 <= r <= 4096, f"{file}: receptive_radius must be an integer in [0, 4096]", r)
    if extra.get("lr_size") is not None:
        size = extra["lr_size"]
        ok = isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) and v >= 1 for v in size)
        _expect(ok, f"{file}: lr_size must be [h, w] with positive integers", size)


def check_version(version: object) -> None:
    if version == 1:
        raise ManifestError(
            "manifest schema version 1 predates the manifest's own content hash: re-export the artifacts "
            "(metasr export-onnx; the bundled model's are re-exported automatically)"
        )
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"manifest schema version {version!r} is not supported (this runtime reads {SCHEMA_VERSION})"
        )


def check_model(model: object) -> None:
    """The model config fields the runtime reads: ``features`` (int >= 1), ``max_scale`` in (1, 16]."""
    _expect(isinstance(model, dict), "model must be an object", model)
    features = model.get("features")  # type: ignore[union-attr]
    _expect(_is_int(features) and features >= 1, "model.features must be a positive integer", features)
    if "max_scale" in model:  # type: ignore[operator]
        top = model["max_scale"]  # type: ignore[index]
        ok = _is_number(top) and math.isfinite(top) and 1.0 < top <= MAX_SCALE_LIMIT
        _expect(ok, f"model.max_scale must be a number in (1, {MAX_SCALE_LIMIT:g}]", top)
