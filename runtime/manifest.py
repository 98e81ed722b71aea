"""The artifact manifest: a typed, stdlib-only description of an exported model directory.

Written by ``metasr export-onnx`` beside the graphs, read and validated by the runtime, which reads only the
manifest and the files it names. Every file's sha256 is recorded and checked before use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FORMATS",
    "KINDS",
    "PRECISIONS",
    "SCHEMA_VERSION",
    "TARGETS",
    "GraphSpec",
    "Manifest",
    "ManifestError",
    "TensorSpec",
    "read_consistent",
    "sha256_file",
]

SCHEMA_VERSION = 1
KINDS = ("feature", "upscale")
FORMATS = ("onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
DTYPES = ("float32", "float16", "int64", "int32", "uint8")
MAX_MERGE_TOL = 1e-2  # offsets closer than this are one phase; above it, distinct phases would be merged
MAX_SCALE_LIMIT = 16.0  # the largest max_scale a ModelConfig accepts
_SHA256 = re.compile(r"[0-9a-f]{64}")
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
        _expect(isinstance(self.name, str) and self.name, "tensor name must be a non-empty string", self.name)
        if self.dtype not in DTYPES:
            raise ManifestError(f"tensor {self.name}: dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        _expect(isinstance(self.shape, (list, tuple)), f"tensor {self.name}: shape must be a list", self.shape)
        for d in self.shape:
            ok = (_is_int(d) and d >= 1) or (isinstance(d, str) and d)
            _expect(ok, f"tensor {self.name}: dims must be positive ints or names", d)
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
        _expect(isinstance(self.file, str) and self.file, "graph file must be a non-empty string", self.file)
        if Path(self.file).name != self.file or self.file in (".", ".."):
            raise ManifestError(f"graph file must be a plain file name, got {self.file!r}")
        for name, value, allowed in (("kind", self.kind, KINDS), ("format", self.format, FORMATS)):
            _expect(value in allowed, f"{self.file}: {name} must be one of {list(allowed)}", value)
        _expect(
            self.precision in PRECISIONS, f"{self.file}: precision must be one of {list(PRECISIONS)}", self.precision
        )
        _expect(self.target in TARGETS, f"{self.file}: target must be one of {list(TARGETS)}", self.target)
        _expect(
            isinstance(self.sha256, str) and _SHA256.fullmatch(self.sha256), f"{self.file}: bad sha256", self.sha256
        )
        _expect(isinstance(self.extra, dict), f"{self.file}: extra must be an object", self.extra)
        _check_extra(self.file, self.extra)
        if self.format == "tensorrt":  # what an engine needs recorded: TensorRT version, GPU, profile, ...
            from metasr.runtime.engines import EngineInfo

            try:
                EngineInfo.from_extra(self.kind, self.extra)
            except ValueError as e:
                raise ManifestError(f"{self.file}: {e}") from None
        object.__setattr__(self, "inputs", _tensor_specs(self.file, "inputs", self.inputs))
        object.__setattr__(self, "outputs", _tensor_specs(self.file, "outputs", self.outputs))


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
        _expect(isinstance(self.graphs, (list, tuple)) and self.graphs, "graphs must be a non-empty list", self.graphs)
        for g in self.graphs:
            _expect(isinstance(g, (GraphSpec, dict)), "each graph must be an object", g)
        object.__setattr__(
            self, "graphs", tuple(g if isinstance(g, GraphSpec) else _build(GraphSpec, g) for g in self.graphs)
        )
        _check_model(self.model)
        for name in ("custom_op", "normalisation", "tools", "calibration"):
            _expect(isinstance(getattr(self, name), dict), f"{name} must be an object", getattr(self, name))
        _expect(_is_int(self.opset) and self.opset >= 13, "opset must be an integer >= 13", self.opset)
        for name in ("scale_min_exclusive", "scale_max", "merge_tol"):
            value = getattr(self, name)
            _expect(_is_number(value) and math.isfinite(value), f"{name} must be a finite number", value)
        top = float(self.model.get("max_scale", MAX_SCALE_LIMIT))
        if not 1.0 <= self.scale_min_exclusive < self.scale_max <= top:
            raise ManifestError(
                f"bad scale range ({self.scale_min_exclusive}, {self.scale_max}]: must lie in (1, {top:g}], "
                "the range the model was exported for"
            )
        _expect(0 < self.merge_tol <= MAX_MERGE_TOL, f"merge_tol must be in (0, {MAX_MERGE_TOL:g}]", self.merge_tol)
        ok = isinstance(self.checkpoint_sha256, str) and (
            not self.checkpoint_sha256 or _SHA256.fullmatch(self.checkpoint_sha256)
        )
        _expect(ok, "checkpoint_sha256 must be empty or a sha256 hex digest", self.checkpoint_sha256)

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
        return _build(cls, data)

    def write(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / "manifest.json"
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def read(cls, directory: str | os.PathLike[str], verify: bool = True) -> Manifest:
        """Read ``directory/manifest.json``; with ``verify`` every named file must exist with its sha256."""
        manifest = cls.from_json(_read_manifest_text(directory))
        if verify:
            manifest.verify_files(directory)
        return manifest

    def verify_files(self, directory: str | os.PathLike[str]) -> None:
        """Raise :class:`ManifestError` unless every named file exists in ``directory`` with its sha256."""
        for g in self.graphs:
            self.read_verified(directory, g)

    def read_verified(self, directory: str | os.PathLike[str] | int, spec: GraphSpec) -> bytes:
        """The bytes of ``spec``'s file, read once and checked against its sha256.

        ``directory`` is the artifact folder's path or an open file descriptor of it (as
        :func:`read_consistent` uses). Backends create their sessions / engines from these bytes, never by
        opening the path again, so what runs is exactly what was hashed. Symbolic links are refused (a
        manifest cannot reach outside its directory).
        """
        data = _read_file(directory, spec.file)
        if hashlib.sha256(data).hexdigest() != spec.sha256:
            raise ManifestError(f"{spec.file} does not match its sha256 in the manifest (file changed or corrupt)")
        return data


class _Vanished(ManifestError):
    """A file named by the manifest is missing (a swapped-out export being deleted, or a broken folder)."""


def _read_file(directory: str | os.PathLike[str] | int, name: str) -> bytes:
    where = f"fd {directory}" if isinstance(directory, int) else str(directory)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        if isinstance(directory, int):
            fd = os.open(name, flags, dir_fd=directory)
        else:
            fd = os.open(Path(directory) / name, flags)
    except FileNotFoundError:
        if name == "manifest.json":
            raise _Vanished(f"no manifest.json in {where}") from None
        raise _Vanished(f"{name} named by the manifest is missing from {where}") from None
    except OSError as e:
        raise ManifestError(f"cannot read {name} in {where}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_consistent(
    directory: str | os.PathLike[str], select: Callable[[Manifest], Sequence[GraphSpec]], attempts: int = 5
) -> tuple[Manifest, list[bytes]]:
    """The manifest and the verified bytes of the graphs ``select`` picks from it, all of one export.

    Everything is read through one open handle on the directory. An export replaces an artifact directory
    whole (a new folder swapped in, the old one deleted), never a file in place, so the files under one
    handle belong to one export; when the folder is swapped out and deleted while it is read, the read
    starts again on the new one (up to ``attempts`` times). A file that does not match its sha256 is an
    error, never a retry. Every returned byte string matches the returned manifest's sha256 for it.
    """
    path = Path(directory)
    for attempt in range(attempts):
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise ManifestError(f"no artifact directory at {path}") from None
            time.sleep(0.01 * (attempt + 1))  # a swap without an atomic exchange leaves a brief gap
            continue
        except OSError as e:
            raise ManifestError(f"cannot open {path}: {e.strerror or e}") from None
        try:
            try:
                text = _read_file(fd, "manifest.json").decode()
            except UnicodeDecodeError as e:
                raise ManifestError(f"{path}/manifest.json is not UTF-8 text: {e}") from None
            manifest = Manifest.from_json(text)
            return manifest, [manifest.read_verified(fd, s) for s in select(manifest)]
        except _Vanished:
            if attempt == attempts - 1 or _same_directory(path, fd):
                raise
        finally:
            os.close(fd)
    raise AssertionError("unreachable")


def _same_directory(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the directory open as ``fd`` (its inode cannot be reused while open)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _read_manifest_text(directory: str | os.PathLike[str]) -> str:
    try:
        return _read_file(directory, "manifest.json").decode()
    except UnicodeDecodeError as e:
        raise ManifestError(f"{directory}/manifest.json is not UTF-8 text: {e}") from None


# -- validation helpers --------------------------------------------------------------------------------------
def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _expect(ok: object, message: str, got: object) -> None:
    if not ok:
        raise ManifestError(f"{message}, got {got!r}"[:300])


def _build(cls: type, data: object) -> Any:
    """``cls(**data)`` with a one-line :class:`ManifestError` for unknown, missing or mistyped fields."""
    _expect(isinstance(data, dict), f"{cls.__name__} must be an object", data)
    unknown = set(data) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    if unknown:
        raise ManifestError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    try:
        return cls(**data)
    except TypeError as e:
        raise ManifestError(f"malformed {cls.__name__}: {e}") from None


def _tensor_specs(file: str, which: str, values: object) -> tuple[TensorSpec, ...]:
    _expect(isinstance(values, (list, tuple)), f"{file}: {which} must be a list", values)
    return tuple(t if isinstance(t, TensorSpec) else _build(TensorSpec, t) for t in values)  # type: ignore[union-attr]


def _check_extra(file: str, extra: dict[str, Any]) -> None:
    """The extras the runtime reads: ``receptive_radius`` (int >= 0), ``lr_size`` ([h, w], positive ints),
    ``upscale_precision`` (a precision: the upscale graph an INT8 feature graph goes with)."""
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


def _check_model(model: object) -> None:
    """The model config fields the runtime reads: ``features`` (int >= 1), ``max_scale`` in (1, 16]."""
    _expect(isinstance(model, dict), "model must be an object", model)
    features = model.get("features")  # type: ignore[union-attr]
    _expect(_is_int(features) and features >= 1, "model.features must be a positive integer", features)
    if "max_scale" in model:  # type: ignore[operator]
        top = model["max_scale"]  # type: ignore[index]
        ok = _is_number(top) and math.isfinite(top) and 1.0 < top <= MAX_SCALE_LIMIT
        _expect(ok, f"model.max_scale must be a number in (1, {MAX_SCALE_LIMIT:g}]", top)
