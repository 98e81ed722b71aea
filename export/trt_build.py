"""TensorRT engines from an artifact directory's ONNX graphs: ``metasr build-engine``.

One static feature engine per LR size (the runtime tiles other image sizes onto it) and one upscale engine
whose optimization profile covers every plan the projection can produce for LR regions up to ``max_lr`` over
the manifest's scale range (:func:`metasr.runtime.engine_profile.upscale_profile`). Networks are strongly
typed, so precision comes from the ONNX files of the chosen precision (FP16 graphs, INT8 Q/DQ graphs): one
code base for TensorRT 10.9 .. 11.x, flags looked up by name, no ``EXPLICIT_BATCH``, no ``BuilderFlag.FP16`` /
``INT8`` and no calibrators (all removed in 11). After parsing, the upscale network must hold exactly one
plugin layer (``metasr::MetaUpscale``, AOT): a TensorRT that imported the ONNX function body instead is
refused unless ``upscale_impl="body"``.

Engines are written into the directory under temporary names, renamed into place, and listed in a manifest
written last and atomically; nothing is touched when the probe (GPU, TensorRT) or any build fails.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from metasr.runtime.engine_profile import UpscaleProfile, upscale_profile
from metasr.runtime.engines import EngineInfo
from metasr.runtime.manifest import GraphSpec, Manifest, TensorSpec
from metasr.runtime.trt_env import TrtEnvironment, require_tensorrt

from metasr.fileio import atomic_path, resolve_dir
from metasr.kernels.ptx import PTX_ISA
from metasr.limits import MAX_SCALE, MAX_SIDE, check_float, check_int, int_problem

__all__ = ["EngineBuildConfig", "EngineBuildError", "build_engines"]

PRECISIONS = ("fp32", "fp16", "int8")


class EngineBuildError(RuntimeError):
    """An engine that could not be built (parse failure, no plugin layer, builder failure)."""


@dataclass(frozen=True)
class EngineBuildConfig:
    """What to build. ``lr_sizes``: static feature-engine input sizes (h, w); ``max_lr``: the largest LR
    region one upscale call takes (default: the largest of ``lr_sizes``)."""

    precision: str = "fp32"
    lr_sizes: tuple[tuple[int, int], ...] = ((256, 256),)
    max_lr: tuple[int, int] | None = None
    timing_cache: Path | None = None
    workspace_mb: int = 2048
    upscale_impl: str = "plugin"  # "plugin" (required) or "body" (accept an imported function body)
    opt_scale: float = 2.0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.lr_sizes or any(int_problem(v, 8, MAX_SIDE) for size in self.lr_sizes for v in size):
            raise ValueError(f"LR sizes must be (h, w) in 8..{MAX_SIDE}, got {list(self.lr_sizes)}")
        if self.max_lr is not None and any(int_problem(v, 1, MAX_SIDE) for v in self.max_lr):
            raise ValueError(f"max LR size must be (h, w) in 1..{MAX_SIDE}, got {self.max_lr}")
        check_int(self.workspace_mb, "workspace_mb", 16, 1 << 20)
        check_float(self.opt_scale, "opt_scale", 1.0, MAX_SCALE, low_open=True)
        if self.timing_cache is not None and self.timing_cache.exists() and not self.timing_cache.is_file():
            raise ValueError(f"timing cache {self.timing_cache} exists and is not a regular file")
        if self.upscale_impl not in ("plugin", "body"):
            raise ValueError(f"upscale_impl must be 'plugin' or 'body', got {self.upscale_impl!r}")

    @property
    def upscale_max_lr(self) -> tuple[int, int]:
        return self.max_lr or (max(h for h, _ in self.lr_sizes), max(w for _, w in self.lr_sizes))


# -- small TensorRT steps (each a function of TensorRT objects; names by attribute, valid 10.9 .. 11.x) ------


def _network_flags(trt, names: tuple[str, ...]) -> int:
    flags = 0
    for name in names:
        flag = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if flag is None:
            raise EngineBuildError(f"this TensorRT ({trt.__version__}) lacks NetworkDefinitionCreationFlag.{name}")
        flags |= 1 << int(flag)
    return flags


def _parse(trt, builder, logger, onnx_path: Path, flags: int):
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    return network, parser


def _plugin_layers(trt, network) -> int:
    return sum(network.get_layer(i).type == trt.LayerType.PLUGIN_V3 for i in range(network.num_layers))


def _build(trt, builder, network, shapes: dict, cfg: EngineBuildConfig, cache: bytes) -> tuple[bytes, bytes]:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    config.set_timing_cache(config.create_timing_cache(cache), False)  # False: refuse a mismatched cache
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


# -- the command ---------------------------------------------------------------------------------------------


def _engine_spec(
    src: GraphSpec, file: str, precision: str, info: EngineInfo, inputs: tuple[TensorSpec, ...]
) -> GraphSpec:
    kept = {k: src.extra[k] for k in ("receptive_radius",) if k in src.extra}  # the tiling overlap
    return GraphSpec(
        file=file, kind=src.kind, format="tensorrt", precision=precision, inputs=inputs, outputs=src.outputs,
        sha256="0" * 64, extra={**kept, **info.to_extra()},  # sha256: set once the engine is written
    )  # fmt: skip


def build_engines(artifacts: str | os.PathLike[str], cfg: EngineBuildConfig, log=print) -> list[GraphSpec]:
    """Build the engines ``cfg`` asks for into ``artifacts`` and list them in its manifest.

    Raises :class:`~metasr.runtime.trt_env.TensorRTUnavailable` (before anything else) without a GPU or
    TensorRT, and :class:`EngineBuildError` / ``ManifestError`` on failure; the directory is then unchanged.
    """
    env: TrtEnvironment = require_tensorrt("metasr build-engine")
    directory = resolve_dir(artifacts, "--artifacts")
    manifest = Manifest.read(directory)
    feature_onnx = manifest.graph("feature", "onnx", cfg.precision, target="tensorrt")
    upscale_onnx = manifest.graph("upscale", "onnx", cfg.precision, target="tensorrt")
    import metasr.export.trt_plugin  # noqa: F401  (registers metasr::MetaUpscale before parsing)
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_bytes = cfg.timing_cache.read_bytes() if cfg.timing_cache and cfg.timing_cache.is_file() else b""
    common = {"tensorrt_version": trt.__version__, "gpu_name": env.gpu_name,
              "compute_capability": f"{env.compute_capability[0]}.{env.compute_capability[1]}"}  # fmt: skip
    built: list[tuple[GraphSpec, bytes]] = []
    channels = int(manifest.model["features"])
    lr_name = feature_onnx.inputs[0].name
    for h, w in cfg.lr_sizes:
        log(f"building the feature engine for {h}x{w} LR tiles ({cfg.precision}) ...")
        flags = _network_flags(trt, ("STRONGLY_TYPED",))
        network, _parser = _parse(trt, builder, logger, directory / feature_onnx.file, flags)
        shape = (1, 3, h, w)
        data, cache_bytes = _build(trt, builder, network, {lr_name: (shape, shape, shape)}, cfg, cache_bytes)
        info = EngineInfo(kind="feature", source=feature_onnx.file, lr_size=(h, w), **common)
        inputs = (TensorSpec(lr_name, "float32", shape),)
        spec = _engine_spec(feature_onnx, f"feature.{cfg.precision}.{h}x{w}.plan", cfg.precision, info, inputs)
        built.append((spec, data))
    shapes: UpscaleProfile = upscale_profile(
        channels, cfg.upscale_max_lr, manifest.scale_max, manifest.merge_tol, opt_scale=cfg.opt_scale
    )
    log(f"building the upscale engine for LR regions up to {shapes.max_lr[0]}x{shapes.max_lr[1]}, "
        f"x{manifest.scale_max:g} ({cfg.precision}) ...")  # fmt: skip
    flags = _network_flags(trt, ("STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS"))
    network, _parser = _parse(trt, builder, logger, directory / upscale_onnx.file, flags)
    n_plugins = _plugin_layers(trt, network)
    if n_plugins != 1 and cfg.upscale_impl != "body":
        raise EngineBuildError(
            f"TensorRT {trt.__version__} did not map MetaUpscale to the metasr::MetaUpscale plugin "
            f"({n_plugins} plugin layers; it imported the ONNX function body instead): use TensorRT >= 10.9, "
            "or pass --upscale-impl body to accept the slower body"
        )
    data, cache_bytes = _build(trt, builder, network, shapes.shapes, cfg, cache_bytes)
    impl = "aot" if n_plugins == 1 else "body"
    info = EngineInfo(kind="upscale", source=upscale_onnx.file, profile=shapes, plugin_impl=impl,
                      ptx_isa=f"{PTX_ISA // 10}.{PTX_ISA % 10}", **common)  # fmt: skip
    spec = _engine_spec(upscale_onnx, f"upscale.{cfg.precision}.plan", cfg.precision, info, upscale_onnx.inputs)
    built.append((spec, data))
    return _install(directory, manifest, built, cfg, cache_bytes)


def _install(
    directory: Path, manifest: Manifest, built: list[tuple[GraphSpec, bytes]], cfg: EngineBuildConfig, cache: bytes
) -> list[GraphSpec]:
    """Write each engine atomically under a new name carrying its hash, then the manifest (atomically), then
    remove the engines it no longer lists: an interrupted run leaves the old manifest and every file it names
    intact, and the next run removes its temporaries (:func:`metasr.fileio.atomic_path`)."""
    specs = []
    for spec, data in built:
        digest = hashlib.sha256(data).hexdigest()
        specs.append(replace(spec, file=f"{spec.file.removesuffix('.plan')}.{digest[:12]}.plan", sha256=digest))
    replaced = {(s.kind, s.format, s.precision, _lr(s)) for s in specs}
    keep = tuple(g for g in manifest.graphs if (g.kind, g.format, g.precision, _lr(g)) not in replaced)
    new_manifest = replace(manifest, graphs=keep + tuple(specs))
    old_files = {g.file for g in manifest.graphs}
    written: list[Path] = []
    try:
        for spec, (_, data) in zip(specs, built, strict=True):
            with atomic_path(directory / spec.file) as tmp:
                tmp.write_bytes(data)
            written.append(directory / spec.file)
        with atomic_path(directory / "manifest.json") as tmp:
            tmp.write_text(new_manifest.to_json() + "\n")
    except BaseException:
        for path in written:
            if path.name not in old_files:
                path.unlink(missing_ok=True)
        raise
    new_files = {g.file for g in new_manifest.graphs}
    for g in manifest.graphs:  # engines the new manifest no longer lists
        if g.format == "tensorrt" and g.file not in new_files:
            (directory / g.file).unlink(missing_ok=True)
    if cfg.timing_cache is not None:
        with atomic_path(cfg.timing_cache) as tmp:
            tmp.write_bytes(cache)
    return specs


def _lr(spec: GraphSpec) -> tuple[int, ...] | None:
    size = spec.extra.get("lr_size") if spec.format == "tensorrt" else None
    return tuple(size) if isinstance(size, list) else None
