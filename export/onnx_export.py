"""``export_onnx``: the two graphs and the manifest, checked and verified against PyTorch, written atomically."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from metasr.export import metaupscale_op as op
from metasr.export.feature_graph import export_feature_graph
from metasr.export.memory_estimate import work_bytes_per_pixel
from metasr.export.portable_graph import PORTABLE_FILES, compose_portable, portable_upscale
from metasr.export.upscale_graph import build_upscale_graph
from metasr.runtime.compare import Comparison, compare
from metasr.runtime.feeds import UPSCALE_PLAN_INPUTS, plan_feeds
from metasr.runtime.manifest import GraphSpec, Manifest, TensorSpec, sha256_file
from metasr.runtime.projection import MERGE_TOL

from metasr.data import make_pair
from metasr.fileio import make_temp_dir, remove_stale_dirs, replace_dir, resolve_dir
from metasr.imresize import imresize
from metasr.limits import MAX_OPSET, MAX_STATIC_LR, MIN_OPSET, float_problem, int_problem
from metasr.model import MetaSR

__all__ = [
    "DEFAULT_OPSET",
    "ONNX_DTYPES",
    "ExportError",
    "ExportResult",
    "export_onnx",
    "portable_protos",
    "verify_with_onnxruntime",
]

DEFAULT_OPSET = 17
# ORT FP32 vs PyTorch: measured max |d| <= 2e-4 (random-weight RDN) on the 0..255 scale; the limits:
ATOL = 1e-2
MIN_UINT8_EQUAL = 0.999


class ExportError(RuntimeError):
    """The exported graphs failed a check or do not reproduce PyTorch."""


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    manifest: Manifest
    comparisons: tuple[Comparison, ...]


def _check(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred", strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{path.name} fails the ONNX checks: {str(e).splitlines()[0]}") from None
    finally:
        Path(str(path) + ".inferred").unlink(missing_ok=True)


# ONNX element types -> the manifest's dtype names (every dtype an exported or calibrated graph has at its boundary)
ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.UINT8: "uint8",
}


def _specs(proto: onnx.ModelProto, which: str) -> tuple[TensorSpec, ...]:
    values = proto.graph.input if which == "inputs" else proto.graph.output
    init = {i.name for i in proto.graph.initializer}
    out = []
    for v in values:
        if v.name in init:
            continue
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        out.append(TensorSpec(v.name, ONNX_DTYPES[t.elem_type], dims))
    return tuple(out)


def _tool_versions() -> dict[str, str]:
    import onnxruntime

    from metasr import __version__
    from metasr.artifacts import exporter_digest

    return {
        "metasr": __version__,
        "exporter": exporter_digest(),  # the bundled model's cache is keyed by it
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def verify_with_onnxruntime(
    directory: Path, manifest: Manifest, model: MetaSR, lr: np.ndarray, scales: Sequence[float]
) -> list[Comparison]:
    """Run both graphs with ONNX Runtime (CPU) on ``lr`` (uint8 (h, w, 3)) and compare with PyTorch (and the
    portable upscale graph with the two-graph one)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    feature = ort.InferenceSession(
        str(directory / manifest.graph("feature").file), opts, providers=["CPUExecutionProvider"]
    )
    upscale = ort.InferenceSession(
        str(directory / manifest.graph("upscale").file), opts, providers=["CPUExecutionProvider"]
    )
    portable = None
    if any(g.kind == "upscale-portable" for g in manifest.graphs):
        portable = ort.InferenceSession(
            str(directory / manifest.graph("upscale-portable").file), opts, providers=["CPUExecutionProvider"]
        )
    x = np.ascontiguousarray(lr.transpose(2, 0, 1))[None].astype(np.float32)  # (1, 3, h, w)
    feats = feature.run(["features"], {"lr": x})[0]
    results = []
    with torch.no_grad():
        ref_feats = model.encode(torch.from_numpy(x))
        results.append(compare("features", feats, ref_feats.numpy(), ATOL, 0.0))
        for scale in scales:
            plan = model.plan(x.shape[2], x.shape[3], scale)
            sr = upscale.run(["sr"], {"features": feats, **plan_feeds(plan)})[0]
            ref = model.upscale(ref_feats, plan).numpy()
            results.append(compare(f"x{scale:g} {plan.out_size[1]}x{plan.out_size[0]}", sr, ref, ATOL, MIN_UINT8_EQUAL))
            if portable is not None:  # the plan computed in the graph: the same output (measured: <= 8e-6)
                got = portable.run(["sr"], {"features": feats, "scale": np.array(scale, dtype=np.float64)})[0]
                results.append(compare(f"portable x{scale:g}", got, sr, ATOL, MIN_UINT8_EQUAL))
    return results


def portable_protos(feature: onnx.ModelProto, upscale: onnx.ModelProto) -> dict[str, onnx.ModelProto]:
    """The six portable graphs (:mod:`metasr.export.portable_graph`) of one precision, by manifest kind."""
    out = {}
    for form, suffix in (("scale", ""), ("size", "-size"), ("inv", "-inv")):
        up = portable_upscale(upscale, form, MERGE_TOL)
        out[f"upscale-portable{suffix}"] = up
        out[f"portable{suffix}"] = compose_portable(feature, up, barrier=form == "inv")
    return out


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir`` whole (:func:`metasr.fileio.replace_dir`), as an :class:`ExportError`."""
    try:
        replace_dir(tmp, out_dir)
    except NotADirectoryError as e:
        raise ExportError(str(e)) from None


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary and swapped-out folders of ``out_dir`` left by killed exports (their pid is gone)."""
    remove_stale_dirs(out_dir)


def export_onnx(
    model: MetaSR,
    out_dir: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    lr_size: tuple[int, int] | None = None,
    max_scale: float | None = None,
    checkpoint_sha256: str = "",
    verify_image: np.ndarray | None = None,
    verify_scales: Sequence[float] = (1.5, 2.3, 3.7, 4.0),
) -> ExportResult:
    """Write ``feature.onnx``, ``upscale.onnx``, the portable graphs (dynamic sizes only; docs/portable.md) and
    ``manifest.json`` to ``out_dir``.

    Both graphs pass the full ONNX checker and strict shape inference; with ``verify_image`` (uint8 HR
    (H, W, 3)) both run on ONNX Runtime against PyTorch at ``verify_scales``; any failure raises
    :class:`ExportError` and leaves ``out_dir`` as it was.
    """
    problem = int_problem(opset, MIN_OPSET, MAX_OPSET)
    if problem:
        raise ExportError(f"opset {problem}")
    if lr_size is not None and any(int_problem(v, 8, MAX_STATIC_LR) for v in lr_size):
        raise ExportError(f"a static LR size needs two integers in 8..{MAX_STATIC_LR}, got {lr_size}")
    model = model.eval()
    cfg = model.config
    max_scale = cfg.max_scale if max_scale is None else max_scale
    problem = float_problem(max_scale, 1.0, cfg.max_scale, low_open=True)
    if problem:
        raise ExportError(f"the largest scale (--max-scale) {problem} for this model")
    try:
        out_dir = resolve_dir(out_dir, "--out")  # a link: its target is replaced, the link stays
    except NotADirectoryError as e:
        raise ExportError(str(e)) from None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    tmp = make_temp_dir(out_dir.parent, out_dir.name)
    try:
        protos = {"feature": export_feature_graph(model, opset, lr_size), "upscale": build_upscale_graph(model, opset)}
        files = {"feature": "feature", "upscale": "upscale"}
        if not lr_size:  # the portable graphs take any image size
            protos.update(portable_protos(protos["feature"], protos["upscale"]))
            files.update(PORTABLE_FILES)
        graphs = []
        for kind, proto in protos.items():
            path = tmp / f"{files[kind]}.onnx"
            onnx.save(proto, str(path))
            _check(path)
            extra: dict = {}
            if kind == "feature":
                extra["receptive_radius"] = int(model.backbone.receptive_radius)
                extra["work_bytes_per_pixel"] = work_bytes_per_pixel(proto)
                if lr_size:
                    extra["lr_size"] = list(lr_size)
            elif "portable" in kind:
                extra["form"] = kind.rsplit("-", 1)[1] if kind.endswith(("-size", "-inv")) else "scale"
            graphs.append(
                GraphSpec(
                    path.name,
                    kind,
                    "onnx",
                    "fp32",
                    _specs(proto, "inputs"),
                    _specs(proto, "outputs"),
                    sha256_file(path),
                    extra,
                )
            )
        manifest = Manifest(
            model=dataclasses.asdict(cfg),
            graphs=tuple(graphs),
            opset=opset,
            custom_op={
                "domain": op.DOMAIN,
                "op_type": op.OP_TYPE,
                "plugin_namespace": op.PLUGIN_NAMESPACE,
                "plugin_version": op.PLUGIN_VERSION,
            },
            scale_min_exclusive=1.0,
            scale_max=float(max_scale),
            merge_tol=MERGE_TOL,
            normalisation={
                "input": "RGB float32 NCHW on the 0..255 scale",
                "output": "RGB float32 NCHW on the 0..255 scale, unclamped: clamp, round half-to-even",
                "plan_inputs": {k: [d, list(s)] for k, (d, s) in UPSCALE_PLAN_INPUTS.items()},
            },
            checkpoint_sha256=checkpoint_sha256,
            tools=_tool_versions(),
        )
        manifest.write(tmp)
        comparisons: list[Comparison] = []
        if verify_image is not None:
            lr, _ = make_pair(verify_image, 2.0, "metasr")
            if lr_size and lr.shape[:2] != tuple(lr_size):  # a static graph takes exactly its size
                lr = imresize(lr, out_shape=tuple(lr_size))
            comparisons = verify_with_onnxruntime(
                tmp, manifest, model, lr, [s for s in verify_scales if s <= max_scale]
            )
            bad = [c for c in comparisons if not c]
            if bad:
                raise ExportError("ONNX Runtime does not reproduce PyTorch: " + "; ".join(map(str, bad)))
        _replace_dir(tmp, out_dir)
        return ExportResult(out_dir, manifest, tuple(comparisons))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
