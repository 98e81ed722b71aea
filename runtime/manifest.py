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

__all__ = ["SCHEMA_VERSION", "GraphSpec", "Manifest", "ManifestError", "TensorSpec", "sha256_file"]

SCHEMA_VERSION = 1


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

    def __post_init__(self) -> None:
        if Path(self.file).name != self.file:
            raise ManifestError(f"graph file must be a plain file name, got {self.file!r}")
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

    def graph(self, kind: str, fmt: str = "onnx", precision: str = "fp32") -> GraphSpec:
        """The graph of a kind, format and precision; a clear error if the artifact has none."""
        for g in self.graphs:
            if (g.kind, g.format, g.precision) == (kind, fmt, precision):
                return g
        have = sorted(f"{g.kind}/{g.format}/{g.precision}" for g in self.graphs)
        raise ManifestError(f"no {kind} graph in {fmt} {precision} (have {have})")

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
