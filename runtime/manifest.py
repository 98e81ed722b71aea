"""The artifact manifest: a typed, stdlib-only description of an exported model directory.

Written by ``metasr export-onnx`` beside the graphs, read and validated by the runtime, which reads only the
manifest and the files it names. Every file's sha256 is recorded and checked before use.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PRECISIONS",
    "SCHEMA_VERSION",
    "TARGETS",
    "GraphSpec",
    "Manifest",
    "ManifestError",
    "TensorSpec",
    "sha256_file",
]

SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
# which consumer a graph is made for: "any" ONNX consumer, TensorRT (symmetric int8 Q/DQ), ONNX Runtime CPU
# (uint8 activations / int8 weights Q/DQ, the form its CPU kernels run fast)
TARGETS = ("any", "tensorrt", "ort-cpu")


class ManifestError(ValueError):
    """A manifest that is missing, malformed, or does not match the files beside it."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: dims are ints or symbolic names."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16", "int64", "int32", "uint8"):
            raise ManifestError(f"tensor {self.name}: unsupported dtype {self.dtype}")
        object.__setattr__(self, "shape", tuple(self.shape))


@dataclass(frozen=True)
class GraphSpec:
    """One file of the artifact (an ONNX graph or an engine)."""

    file: str
    kind: str  # "feature" | "upscale"
    format: str  # "onnx" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)
    target: str = "any"  # one of TARGETS; manifests written before the field existed read as "any"

    def __post_init__(self) -> None:
        if Path(self.file).name != self.file:
            raise ManifestError(f"graph file must be a plain file name, got {self.file!r}")
        if self.target not in TARGETS:
            raise ManifestError(f"graph {self.file}: target must be one of {TARGETS}, got {self.target!r}")
        object.__setattr__(
            self, "inputs", tuple(t if isinstance(t, TensorSpec) else TensorSpec(**t) for t in self.inputs)
        )
        object.__setattr__(
            self, "outputs", tuple(t if isinstance(t, TensorSpec) else TensorSpec(**t) for t in self.outputs)
        )


@dataclass(frozen=True)
class Manifest:
    """Everything a runtime needs to run an artifact directory."""

    model: dict[str, Any]
    graphs: tuple[GraphSpec, ...]
    opset: int
    custom_op: dict[str, str]
    scale_min_exclusive: float
    scale_max: float
    merge_tol: float
    normalisation: dict[str, Any]
    checkpoint_sha256: str
    tools: dict[str, str]
    schema_version: int = SCHEMA_VERSION
    # per precision ("int8", "fp16"), the record `metasr calibrate` wrote: images, method, ranges file, kept
    # tensors, measured loss (see metasr.calibration); empty for a plain export
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest schema version {self.schema_version} is not supported (this runtime reads {SCHEMA_VERSION})"
            )
        object.__setattr__(
            self, "graphs", tuple(g if isinstance(g, GraphSpec) else GraphSpec(**g) for g in self.graphs)
        )
        if not 1.0 <= self.scale_min_exclusive < self.scale_max:
            raise ManifestError(f"bad scale range ({self.scale_min_exclusive}, {self.scale_max}]")

    def graph(self, kind: str, fmt: str = "onnx", precision: str = "fp32", target: str = "any") -> GraphSpec:
        """The graph of a kind, format and precision for a consumer; a clear one-line error if there is none.

        ``target`` (one of :data:`TARGETS`): the graph made for that consumer if the artifact has one, else the
        one made for ``"any"``. INT8 artifacts hold the feature graph twice (``feature.int8.trt.onnx``, target
        ``"tensorrt"``; ``feature.int8.cpu.onnx``, target ``"ort-cpu"``) and no INT8 upscale graph: the upscale
        stage stays in float, and ``graph("upscale", fmt, "int8", target)`` resolves to the upscale graph of
        the precision named by the INT8 feature graph's ``extra["upscale_precision"]`` (``"fp32"`` as written
        by ``metasr calibrate``), so a runtime asks for both stages with the same precision.
        """
        if target not in TARGETS:
            raise ManifestError(f"target must be one of {TARGETS}, got {target!r}")
        if precision not in PRECISIONS:
            raise ManifestError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if not any(g.precision == precision and g.format == fmt for g in self.graphs):
            hint = f"; make them with `metasr calibrate --precision {precision}`" if precision != "fp32" else ""
            have = ", ".join(self.precisions(fmt)) or "none"
            raise ManifestError(f"the artifacts have no {fmt} {precision} graphs (they have: {have}){hint}")
        matches = [g for g in self.graphs if (g.kind, g.format, g.precision) == (kind, fmt, precision)]
        for wanted in (target, "any"):
            for g in matches:
                if g.target == wanted:
                    return g
        if kind == "upscale" and not matches:  # e.g. INT8: the upscale stage runs in the precision named here
            for g in self.graphs:
                paired = g.extra.get("upscale_precision")
                if (g.kind, g.format, g.precision) == ("feature", fmt, precision) and paired not in (None, precision):
                    return self.graph(kind, fmt, paired, target)
        have = sorted(f"{g.kind}/{g.format}/{g.precision}/{g.target}" for g in self.graphs)
        raise ManifestError(f"no {kind} graph in {fmt} {precision} for target {target} (have {have})")

    def precisions(self, fmt: str = "onnx") -> tuple[str, ...]:
        """The precisions whose feature graph the artifact holds in ``fmt``, in :data:`PRECISIONS` order."""
        have = {g.precision for g in self.graphs if (g.kind, g.format) == ("feature", fmt)}
        return tuple(p for p in PRECISIONS if p in have)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"manifest is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ManifestError(f"unknown manifest keys: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ManifestError(f"malformed manifest: {e}") from None

    def write(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / "manifest.json"
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def read(cls, directory: str | os.PathLike[str], verify: bool = True) -> Manifest:
        """Read ``directory/manifest.json``; with ``verify`` every named file must exist with its sha256."""
        path = Path(directory) / "manifest.json"
        if not path.is_file():
            raise ManifestError(f"no manifest.json in {directory}")
        manifest = cls.from_json(path.read_text())
        if verify:
            manifest.verify_files(directory)
        return manifest

    def verify_files(self, directory: str | os.PathLike[str]) -> None:
        for g in self.graphs:
            file = Path(directory) / g.file
            if not file.is_file():
                raise ManifestError(f"{g.file} named by the manifest is missing from {directory}")
            digest = sha256_file(file)
            if digest != g.sha256:
                raise ManifestError(f"{g.file} does not match its sha256 in the manifest (file changed or corrupt)")
