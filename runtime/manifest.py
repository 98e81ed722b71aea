"""The artifact manifest: a typed, stdlib-only description of an exported model directory.

Written by ``metasr export-onnx`` (and updated by ``calibrate`` and ``build-engine``) beside the graphs, read
and validated by the runtime, which reads only the manifest and the files it names.

Integrity: every file's sha256 is recorded and checked before use, and the manifest carries its own
``content_sha256``: the sha256 of its canonical JSON (:func:`content_hash`: every other field, keys sorted,
no whitespace, ASCII), checked on every read, so a manifest edited by hand is refused in one line. Beyond the
types, the fields the runtime acts on are checked against each other and against the graphs they describe
(:mod:`metasr.runtime.manifest_checks`): the feature graphs' receptive radius against the model config's
backbone, a static ``lr_size`` against the graph's input dims, channel counts against the model, the scale
range against the model's; the backends then check the declared inputs and outputs against the loaded graph.
Files are read only as regular files of bounded size (no links, FIFOs or devices), the JSON with a depth
limit (:mod:`metasr.safeio`).
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

from metasr.jsonio import JSONLimitError, loads_bounded
from metasr.safeio import UnsafeFileError, read_regular

__all__ = [
    "FORMATS",
    "KINDS",
    "MAX_GRAPH_BYTES",
    "MAX_MANIFEST_BYTES",
    "PRECISIONS",
    "SCHEMA_VERSION",
    "TARGETS",
    "GraphSpec",
    "Manifest",
    "ManifestError",
    "TensorSpec",
    "content_hash",
    "read_consistent",
    "sha256_file",
]

# 2: the manifest's own content_sha256; feature graphs record their receptive radius and working memory
SCHEMA_VERSION = 2
MAX_MANIFEST_BYTES = 16 << 20  # the bundled model's is 5 KB; an INT8 one with its calibration record ~40 KB
MAX_GRAPH_BYTES = 2 << 30  # protobuf's own limit for one ONNX file; engines of these models are far smaller
MAX_JSON_DEPTH = 64  # a manifest nests at most 6 deep (a calibration record)
# portable kinds (docs/portable.md): the plan computed inside; "-size": an exact output size instead of a scale;
# "-inv": the output size and float32(1 / scale) instead of a scale (no float64: for OpenVINO)
KINDS = ("feature", "upscale", "upscale-portable", "upscale-portable-size", "portable", "portable-size",
         "upscale-portable-inv", "portable-inv")  # fmt: skip
FORMATS = ("onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8")
MAX_MERGE_TOL = 1e-2  # offsets closer than this are one phase; above it, distinct phases would be merged
MAX_SCALE_LIMIT = 16.0  # the largest max_scale a ModelConfig accepts
MAX_WORK_BYTES_PER_PIXEL = 1e7  # Meta-RDN's feature graph needs ~15 KB per input pixel
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
    kind: str  # one of KINDS
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
        _checks.check_extra(self.file, self.extra)
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
        _checks.check_version(self.schema_version)
        _expect(isinstance(self.graphs, (list, tuple)) and self.graphs, "graphs must be a non-empty list", self.graphs)
        for g in self.graphs:
            _expect(isinstance(g, (GraphSpec, dict)), "each graph must be an object", g)
        object.__setattr__(
            self, "graphs", tuple(g if isinstance(g, GraphSpec) else _build(GraphSpec, g) for g in self.graphs)
        )
        _checks.check_model(self.model)
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
        _checks.check_consistency(self)

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
        if kind.startswith("upscale") and not matches:  # e.g. INT8: the upscale stage runs in the precision named here
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
        """The manifest as JSON, with its ``content_sha256`` (see :func:`content_hash`)."""
        data = asdict(self)
        return json.dumps({**data, "content_sha256": content_hash(data)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse and validate; the ``content_sha256`` must match the content (a hand-edited manifest fails)."""
        try:
            data = loads_bounded(text, "manifest.json", max_chars=MAX_MANIFEST_BYTES, max_depth=MAX_JSON_DEPTH)
        except JSONLimitError as e:
            raise ManifestError(str(e)) from None
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        _checks.check_version(data.get("schema_version"))
        recorded = data.pop("content_sha256", None)
        if recorded != content_hash(data):
            raise ManifestError(
                "manifest.json does not match its content_sha256 (edited by hand or corrupt); "
                "re-create it with metasr export-onnx / calibrate / build-engine"
            )
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
        manifest = cls.from_json(_read_file(directory, "manifest.json"))
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
    """A file of the artifact directory: a regular file (no link, FIFO or device) of bounded size."""
    where = f"fd {directory}" if isinstance(directory, int) else str(directory)
    limit = MAX_MANIFEST_BYTES if name == "manifest.json" else MAX_GRAPH_BYTES
    try:
        if isinstance(directory, int):
            return read_regular(name, limit, dir_fd=directory)
        return read_regular(Path(directory) / name, limit)
    except FileNotFoundError:
        if name == "manifest.json":
            raise _Vanished(f"no manifest.json in {where}") from None
        raise _Vanished(f"{name} named by the manifest is missing from {where}") from None
    except NotADirectoryError:
        raise ManifestError(f"{where} is not a directory") from None
    except UnsafeFileError as e:
        raise ManifestError(f"cannot read {name} in {where}: {e}") from None


def content_hash(data: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON: every field but ``content_sha256``, keys sorted, separators
    ``,`` and ``:``, ASCII only (Python's ``json.dumps(..., sort_keys=True, separators=(",", ":"))``)."""
    body = {k: v for k, v in data.items() if k != "content_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_consistent(
    directory: str | os.PathLike[str], select: Callable[[Manifest], Sequence[GraphSpec]], attempts: int = 20
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
            manifest = Manifest.from_json(_read_file(fd, "manifest.json"))
            return manifest, [manifest.read_verified(fd, s) for s in select(manifest)]
        except _Vanished as e:
            if attempt == attempts - 1 or _same_directory(path, fd):
                raise _Vanished(str(e).replace(f"fd {fd}", str(path))) from None
            time.sleep(0.002 * attempt)  # a writer swapping exports in a tight loop: let one finish
        except ManifestError as e:  # name the folder, not the descriptor it was read through
            raise ManifestError(str(e).replace(f"fd {fd}", str(path))) from None
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


# the field checks live beside; imported last, as they import this module's names (a cycle resolved here)
from metasr.runtime import manifest_checks as _checks  # noqa: E402
