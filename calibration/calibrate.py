"""``calibrate``: add FP16 or INT8 graphs to an artifact directory, measured and recorded, atomically.

INT8: ranges of every activation of ``feature.onnx`` are collected once (:mod:`~metasr.calibration.ranges`) and
written to ``calibration.int8.ranges.json``; both forms (:data:`~metasr.calibration.quantize.TENSORRT`,
:data:`~metasr.calibration.quantize.ORT_CPU`) are quantized from them, and each form's sensitivity pass
(:mod:`~metasr.calibration.sensitivity`) keeps tensors in float until the budget holds on the held-apart crops
(the image rule and the weight rule applied throughout; the CPU form then gets its exact layout anchors).
The upscale graph stays FP32: the INT8 feature graphs name it (``extra["upscale_precision"] = "fp32"``).

FP16: both graphs converted (:mod:`~metasr.calibration.fp16`), ``feature.fp16.onnx`` / ``upscale.fp16.onnx``.

The work happens in a copy of the directory beside it, which replaces the directory (the exporter's locked,
atomic swap: :func:`metasr.fileio.replace_dir`) only when everything succeeded, the budget holds and the
directory is still the one the copy was made from; any failure or interruption leaves the directory
byte-identical. A budget that cannot be met leaves it unchanged too, and the report is written beside it
(``<dir>.calibration.<precision>.md``).

The copy carries over only what the manifest names, as regular files read without following links: every
graph (checked against its sha256) and the files of earlier calibration records (ranges, reports). Nothing
outside the directory is ever read through a link inside it, and anything else in the directory is not
carried over. A directory given as a symbolic link is resolved first (the link stays; its target is updated).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from metasr.calibration.data import MIN_LR, FeatureFeeds, calibration_sets
from metasr.calibration.fp16 import convert_fp16, plan_only_nodes
from metasr.calibration.int8_rules import (
    LAYOUT_ANCHOR,
    WEIGHT_RULE,
    anchor_layout,
    image_rule_tensors,
    int8_kernels,
    quantized_weights,
    ruled_graph,
)
from metasr.calibration.quantize import (
    EDGE,
    FORMS,
    IMAGE_RULE,
    QuantForm,
    quantize_graph,
    quantized_edges,
    quantized_tensors,
)
from metasr.calibration.ranges import METHODS, collect_ranges
from metasr.calibration.report import write_report
from metasr.calibration.sensitivity import DEFAULT_REFERENCE_PSNR_DB, Scorer, choose_float_tensors
from metasr.export.memory_estimate import work_bytes_per_pixel
from metasr.export.onnx_export import ONNX_DTYPES
from metasr.runtime.manifest import MAX_MANIFEST_BYTES, GraphSpec, Manifest, sha256_file

from metasr.fileio import atomic_path, make_temp_dir, remove_stale_dirs, replace_dir, resolve_dir
from metasr.limits import (
    MAX_BUDGET_DB,
    MAX_CROPS,
    MAX_HELD_APART,
    MAX_KEPT,
    MAX_SEED,
    REFERENCE_PSNR_RANGE,
    check_float,
    check_int,
    check_threads,
)
from metasr.safeio import UnsafeFileError, read_regular

__all__ = ["DEFAULT_BUDGET_DB", "CalibrationConfig", "CalibrationError", "CalibrationResult", "calibrate"]

# the project's targets: INT8 within 0.10 dB, FP16 within 0.01 dB of FP32 on every Set5/Set14 cell
DEFAULT_BUDGET_DB = {"int8": 0.1, "fp16": 0.01}
MAX_LR_CROP = 1024  # an LR crop side: the crops are cut from training images of a few hundred pixels


class CalibrationError(ValueError):
    """Bad calibration settings or an artifact directory that cannot be calibrated."""


@dataclass(frozen=True)
class CalibrationConfig:
    """What ``metasr calibrate`` does; validated on construction."""

    image_dirs: tuple[str, ...]
    precision: str  # "int8" | "fp16"
    method: str = "percentile"  # INT8 ranges: minmax | entropy | percentile
    percentile: float = 99.999
    # worst scale bin's Y-PSNR loss against FP32, at the reference PSNR (sensitivity.py); None: the precision's
    # target (DEFAULT_BUDGET_DB)
    budget_db: float | None = None
    reference_psnr_db: float = DEFAULT_REFERENCE_PSNR_DB  # the sharpest reconstruction the budget protects
    min_psnr_db: float = 50.0  # and its output's PSNR against the FP32 output at least this
    crops: int = 128  # calibration crops (ranges)
    held_apart: int = 24  # crops from held-apart images (sensitivity pass, reported loss)
    seed: int = 0
    lr_sizes: tuple[int, int] = (24, 64)  # LR crop side range (pixels)
    max_kept: int = 8  # at most this many activations kept in float by the sensitivity pass (per form)
    threads: int = 1  # ONNX Runtime threads while measuring (1 runs best on a shared machine)
    allow_evaluation_images: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_dirs", tuple(str(d) for d in self.image_dirs))
        if not self.image_dirs:
            raise CalibrationError("give at least one image folder")
        if self.precision not in ("int8", "fp16"):
            raise CalibrationError(f"precision must be int8 or fp16, got {self.precision!r}")
        if self.method not in METHODS:
            raise CalibrationError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.budget_db is None:
            object.__setattr__(self, "budget_db", DEFAULT_BUDGET_DB[self.precision])
        try:
            check_float(self.percentile, "percentile", 50.0, 100.0, low_open=True)
            check_float(self.budget_db, "budget_db", 0.0, MAX_BUDGET_DB)
            check_float(self.reference_psnr_db, "reference_psnr_db", *REFERENCE_PSNR_RANGE)
            check_float(self.min_psnr_db, "min_psnr_db", 0.0, 200.0)
            check_int(self.crops, "crops", 1, MAX_CROPS)
            check_int(self.held_apart, "held_apart", 1, MAX_HELD_APART)
            check_int(self.seed, "seed", 0, MAX_SEED)
            check_int(self.max_kept, "max_kept", 0, MAX_KEPT)
            check_threads(self.threads)
            for side in self.lr_sizes:
                check_int(side, "LR crop side", MIN_LR, MAX_LR_CROP)
        except ValueError as e:
            raise CalibrationError(str(e)) from None
        if len(self.lr_sizes) != 2 or self.lr_sizes[0] > self.lr_sizes[1]:
            raise CalibrationError(f"LR crop sizes must be (min, max) with min <= max, got {self.lr_sizes}")


@dataclass(frozen=True)
class CalibrationResult:
    """``met``: the budget held and the directory was updated; the report's paths either way."""

    met: bool
    report: dict
    report_md: Path
    report_json: Path


def _graph_spec(path: Path, kind: str, precision: str, target: str, like: GraphSpec, extra: dict) -> GraphSpec:
    proto = onnx.load(str(path), load_external_data=False)
    for values, specs in ((proto.graph.input, like.inputs), (proto.graph.output, like.outputs)):
        got = [(v.name, ONNX_DTYPES.get(v.type.tensor_type.elem_type)) for v in values]
        if got != [(t.name, t.dtype) for t in specs]:
            raise CalibrationError(f"{path.name}: inputs/outputs {got} differ from the float graph's")
    if kind == "feature":  # this graph's own working memory (the memory bound of metasr upscale)
        extra = {**extra, "work_bytes_per_pixel": work_bytes_per_pixel(proto)}
    return GraphSpec(
        path.name,
        kind,
        "onnx",
        precision,
        like.inputs,
        like.outputs,
        sha256_file(path),
        {**like.extra, **extra},
        target,
    )


def _save_checked(model: onnx.ModelProto, path: Path) -> None:
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)


def _int8(work: Path, manifest: Manifest, config: CalibrationConfig, scorer: Scorer, cal, progress: bool):
    feature = manifest.graph("feature")
    model = onnx.load(str(work / feature.file))
    ranges = collect_ranges(model, FeatureFeeds(cal), config.method, config.percentile, progress)
    ranges_file = "calibration.int8.ranges.json"
    with atomic_path(work / ranges_file) as tmp:
        tmp.write_text(ranges.to_json() + "\n")
    forms, specs = {}, []
    for form in FORMS:
        forms[form.target], spec = _int8_form(work, model, ranges, form, feature, config, scorer, progress)
        specs.append(spec)
    return specs, forms, {"ranges_file": ranges_file, "ranges": dict(ranges.ranges)}


def _int8_form(work, model, ranges, form: QuantForm, feature: GraphSpec, config, scorer, progress):
    quantized = quantize_graph(model, ranges, form)
    rule = image_rule_tensors(quantized, model)

    def build(names: list[str]) -> onnx.ModelProto:
        return ruled_graph(quantized, model, form, names)[0]

    base, rule_weights = ruled_graph(quantized, model, form)
    # a tensor with several consumers is a candidate per consumer (one can read it in float while the others
    # stay INT8: e.g. a global skip connection, without making the convolution that reads it run in float)
    edges = [e for e in quantized_edges(quantized) if e.split(EDGE)[0] not in rule]
    shared = {e.split(EDGE)[0] for e in edges}
    candidates = [t for t in quantized_tensors(quantized) if t not in rule and t not in shared]
    candidates += edges + [w for w in quantized_weights(quantized, model) if w not in rule_weights]
    base_kernels = int8_kernels(base, form)
    costs = {c: len(base_kernels - int8_kernels(build([c]), form)) for c in candidates}

    result = choose_float_tensors(
        build, candidates, scorer, config.budget_db, config.min_psnr_db, config.max_kept, progress, costs
    )
    kept = [k.name for k in result.kept]
    graph, weights = ruled_graph(quantized, model, form, kept)
    kernels = int8_kernels(graph, form)
    graph, anchors = anchor_layout(graph, form)  # exact: the scores above stand
    _save_checked(graph, work / form.file)
    spec = _graph_spec(work / form.file, "feature", "int8", form.target, feature, {"upscale_precision": "fp32"})
    record = {
        "file": form.file,
        "rule": IMAGE_RULE,
        "rule_kept": rule,
        "weight_rule": WEIGHT_RULE,
        "weight_rule_kept": weights,
        "int8_kernels": len(kernels),
        "layout_anchor": LAYOUT_ANCHOR if anchors else None,
        "layout_anchored": anchors,
        **result.to_dict(),
    }
    return record, spec


def _fp16(work: Path, manifest: Manifest, config: CalibrationConfig, scorer: Scorer):
    specs, protos = [], {}
    for kind in ("feature", "upscale"):
        spec = manifest.graph(kind)
        model = onnx.load(str(work / spec.file))
        keep = plan_only_nodes(model) if kind == "upscale" else []
        protos[kind] = convert_fp16(model, keep)
        path = work / f"{kind}.fp16.onnx"
        _save_checked(protos[kind], path)
        specs.append(_graph_spec(path, kind, "fp16", "any", spec, {"float32_nodes": keep}))
    score = scorer.score(protos["feature"], protos["upscale"])
    met = score.loss_db <= config.budget_db and score.psnr_vs_fp32 >= config.min_psnr_db
    rule = "the upscale graph's weight predictor (nodes computed from the plan inputs only) stays float32"
    form = {"file": "feature.fp16.onnx + upscale.fp16.onnx", "kept": [], "final": score.to_dict(), "met": met}
    return specs, {"any": {**form, "rule": rule}}, {}


def calibrate(
    artifacts: str | os.PathLike[str], config: CalibrationConfig, progress: bool = False
) -> CalibrationResult:
    """Add ``config.precision`` graphs to ``artifacts`` (see the module docstring); returns the outcome.

    Raises :class:`CalibrationError` (or :class:`~metasr.runtime.manifest.ManifestError`) for unusable input,
    before anything is written. On any exception the directory is left as it was.
    """
    directory = resolve_dir(artifacts, "--artifacts")
    before = _manifest_digest(directory)
    manifest = Manifest.read(directory)
    manifest.graph("feature"), manifest.graph("upscale")  # FP32 graphs present, or a clear error
    cal, held = calibration_sets(
        config.image_dirs,
        config.crops,
        config.held_apart,
        config.seed,
        (1.1, manifest.scale_max),
        config.lr_sizes,
        config.allow_evaluation_images,
    )
    resolved = [str(Path(d).resolve()) for d in config.image_dirs]  # the folders as given, and where they are
    remove_stale_dirs(directory)
    work = make_temp_dir(directory.parent, directory.name)
    try:
        _carry_over(directory, manifest, work)
        fp32 = (work / manifest.graph("feature").file, work / manifest.graph("upscale").file)
        scorer = Scorer(
            str(fp32[0]),
            str(fp32[1]),
            held,
            manifest.scale_max,
            manifest.merge_tol,
            config.threads,
            config.reference_psnr_db,
        )
        if config.precision == "int8":
            specs, forms, extra = _int8(work, manifest, config, scorer, cal, progress)
        else:
            specs, forms, extra = _fp16(work, manifest, config, scorer)
        met = all(f["met"] for f in forms.values())
        report = {
            "precision": config.precision,
            "met": met,
            **dataclasses.asdict(config),
            "images": list(config.image_dirs),
            "images_resolved": resolved,
            "calibration_sources": sorted({c.source for c in cal}),
            "held_apart_sources": sorted({c.source for c in held}),
            **extra,
            "forms": forms,
        }
        stem = f"calibration.{config.precision}"
        if not met:  # the directory stays as it was; the report goes beside it
            json_path, md_path = write_report(report, directory.parent / f"{directory.name}.{stem}")
            return CalibrationResult(False, report, md_path, json_path)
        json_path, md_path = write_report(report, work / stem)
        record = {
            "images": list(config.image_dirs),  # as given (relative to the caller's folder, perhaps)
            "images_resolved": resolved,
            "crops": config.crops,
            "held_apart": config.held_apart,
            "seed": config.seed,
            "method": config.method if config.precision == "int8" else None,
            "ranges_file": extra.get("ranges_file"),
            "report": md_path.name,
            "report_json": json_path.name,
            "budget_db": config.budget_db,
            "reference_psnr_db": config.reference_psnr_db,
            "kept": {
                t: f.get("rule_kept", []) + [k["name"] for k in f["kept"]] + f.get("weight_rule_kept", [])
                for t, f in forms.items()
            },
            "loss_db": {t: f["final"]["loss_db"] for t, f in forms.items()},
            "psnr_vs_fp32_db": {t: f["final"]["psnr_vs_fp32"] for t, f in forms.items()},
        }
        specs += _portable_variants(work, manifest, specs)
        graphs = [g for g in manifest.graphs if g.precision != config.precision] + specs
        updated = dataclasses.replace(
            manifest, graphs=tuple(graphs), calibration={**manifest.calibration, config.precision: record}
        )
        with atomic_path(work / "manifest.json") as tmp:
            tmp.write_text(updated.to_json() + "\n")
        Manifest.read(work)  # every file it names is there with its sha256

        def unchanged() -> None:  # under the swap lock: a concurrent export or calibration would be lost
            if _manifest_digest(directory) != before:
                raise CalibrationError(f"{directory} changed while calibrating (a concurrent export?); run again")

        replace_dir(work, directory, check=unchanged)
        return CalibrationResult(True, report, directory / md_path.name, directory / json_path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _portable_variants(work: Path, manifest: Manifest, specs: list[GraphSpec]) -> list[GraphSpec]:
    """The portable graphs (docs/portable.md) of each new feature graph: ``metasr.portable[.size|.inv].<tag>.onnx``
    with the upscale graph it pairs with (INT8: the FP32 one); FP16 also ``upscale.portable[.size|.inv].fp16.onnx``."""
    if not any(g.kind == "portable" for g in manifest.graphs):
        return []  # a static export: no portable graphs to pair with
    from metasr.export.onnx_export import portable_protos

    out = []
    for feature in (g for g in specs if g.kind == "feature"):
        tag = feature.file[len("feature.") : -len(".onnx")]  # fp16, int8.trt, int8.cpu
        up = next((g for g in specs if g.kind == "upscale"), None) or manifest.graph("upscale")
        protos = portable_protos(onnx.load(str(work / feature.file)), onnx.load(str(work / up.file)))
        for kind, proto in protos.items():
            if kind.startswith("upscale") and up.precision != feature.precision:
                continue  # INT8: the FP32 portable upscale graphs serve (Manifest.graph follows upscale_precision)
            like = manifest.graph(kind)
            path = work / like.file.replace(".onnx", f".{tag}.onnx")
            _save_checked(proto, path)
            out.append(_graph_spec(path, kind, feature.precision, feature.target, like, {}))
    return out


_MAX_RECORD_BYTES = 64 << 20  # a calibration record's ranges / report files (a few KB to a few MB)


def _manifest_digest(directory: Path) -> str:
    try:
        return hashlib.sha256(read_regular(directory / "manifest.json", MAX_MANIFEST_BYTES)).hexdigest()
    except (FileNotFoundError, UnsafeFileError):
        return ""


def _carry_over(directory: Path, manifest: Manifest, work: Path) -> None:
    """Copy into ``work`` the regular files ``manifest`` names (see the module docstring), nothing else."""
    for spec in manifest.graphs:
        (work / spec.file).write_bytes(manifest.read_verified(directory, spec))
    names = {
        record.get(key)
        for record in manifest.calibration.values()
        for key in ("ranges_file", "report", "report_json")
        if isinstance(record, dict)
    }
    for name in sorted(n for n in names if isinstance(n, str) and n and Path(n).name == n):
        try:
            data = read_regular(directory / name, _MAX_RECORD_BYTES)
        except FileNotFoundError:
            continue  # a report the user deleted: the record stays, the file is not needed to run
        except UnsafeFileError as e:
            raise CalibrationError(f"{e} (calibrate carries over only regular files)") from None
        (work / name).write_bytes(data)


def image_dirs_arg(values: Sequence[str]) -> tuple[str, ...]:
    """Image folders as given on the command line, each checked to exist."""
    for v in values:
        if not Path(v).is_dir():
            raise CalibrationError(f"no image folder at {v}")
    return tuple(values)
