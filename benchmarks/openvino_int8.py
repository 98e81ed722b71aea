"""OpenVINO INT8 (both Q/DQ forms) against OpenVINO FP32 and ONNX Runtime FP32 / INT8, interleaved in one run.

    python benchmarks/openvino_int8.py --artifacts artifacts/small [--sizes 80x120,180x320,360x640] [--scale 4]
        [--repeats 15] [--threads N] [--shapes] [--pinning] [--no-speed] [--accuracy]

``--artifacts``: the bundled model's artifacts with INT8 graphs (``metasr calibrate --precision int8``) and,
for ``--accuracy``, FP16 ones. Prints the CPU (VNNI, bf16), the versions and the load average, then:

- **kernels**: per OpenVINO feature graph, how many convolutions run on which kernel and precision after
  OpenVINO's transformations (``compiled_model.get_runtime_model()``), and which other layers are left;
- **speed**, per LR size of ``--sizes``: each repeat times every variant once, in turn (medians and ratios).
  Feature stage: one call of each feature graph on the whole image: OpenVINO FP32 / INT8 TensorRT form / INT8
  CPU form, ONNX Runtime FP32 / INT8 CPU form (the forms each backend runs are marked). End to end: what
  ``Pipeline`` runs (feature stage tiled above 512 pixels a side + the FP32 upscale stage at ``--scale``) on
  each backend at fp32 and int8 (the form ``BACKEND_TARGETS`` maps it to);
- ``--shapes``: OpenVINO's dynamic-shape handling: the first call at a new input shape against later ones, and
  the dynamic feature graph against a copy compiled for the one static shape (the per-shape cache the backend
  does not keep); the upscale stage's first call at a new scale against a repeat, on both backends;
- ``--pinning``: OpenVINO's thread pinning (``ENABLE_CPU_PINNING``, on by default on Linux) on and off;
- ``--accuracy``: Y-PSNR change against ONNX Runtime FP32 on Set5 / Set14 per variant (OpenVINO at every
  precision and both INT8 forms, ONNX Runtime's INT8 forms beside them), as ``benchmarks/calibration_accuracy.py``
  prints it (:func:`metasr.calibration.evaluate.evaluate_precisions`).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import openvino
from metasr.calibration.evaluate import Variant, evaluate_precisions, format_cells
from metasr.runtime.backends import BACKEND_TARGETS, open_backend
from metasr.runtime.feeds import plan_feeds
from metasr.runtime.manifest import Manifest
from metasr.runtime.openvino_backend import (
    DEFAULT_PROPERTIES,
    INFERENCE_PRECISION,
    OpenVinoBackend,
    convolution_kernels,
)
from metasr.runtime.pipeline import Pipeline

from metasr.bundled import find_shared_data
from metasr.cli.common import CLIError, parse_pair
from metasr.measure import cpu_summary

# feature-stage variants: label -> (backend, precision, target)
FEATURES = {
    "OpenVINO FP32": ("openvino", "fp32", "any"),
    "OpenVINO INT8 TensorRT form": ("openvino", "int8", "tensorrt"),
    "OpenVINO INT8 CPU form": ("openvino", "int8", "ort-cpu"),
    "ONNX Runtime FP32": ("ort", "fp32", "any"),
    "ONNX Runtime INT8 CPU form": ("ort", "int8", "ort-cpu"),
}
ACCURACY = [
    Variant("OpenVINO fp32", "fp32", "any", "openvino"),
    Variant("OpenVINO fp16", "fp16", "any", "openvino"),
    Variant("OpenVINO int8 TensorRT form", "int8", "tensorrt", "openvino"),
    Variant("OpenVINO int8 CPU form", "int8", "ort-cpu", "openvino"),
    Variant("ONNX Runtime int8 CPU form", "int8", "ort-cpu", "ort"),
    Variant("ONNX Runtime int8 TensorRT form", "int8", "tensorrt", "ort"),
]


def _interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each run; every repeat runs each once, in turn (after one warm-up call each)."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _feature_graph(art: Path, manifest: Manifest, backend: str, precision: str, target: str, threads: int):
    spec = manifest.graph("feature", "onnx", precision, target)
    return open_backend(backend, spec, manifest.read_verified(art, spec), threads)


def _runs_as(backend: str, target: str) -> str:
    return " (runs)" if target == BACKEND_TARGETS.get(backend, "any") else ""


def kernels(art: Path, manifest: Manifest) -> None:
    print("\n**OpenVINO's runtime graph of each feature graph** (after its transformations; LR 80x120)")
    print("\n| feature graph | convolutions: kernel, precision, count | other layers |\n|---|---|---|")
    x = {"lr": np.zeros((1, 3, 80, 120), np.float32)}
    for label, (backend, precision, target) in FEATURES.items():
        if backend != "openvino":
            continue
        graph = _feature_graph(art, manifest, backend, precision, target, 0)
        graph.infer(x)
        runtime = graph.runtime_model()
        convs = collections.Counter((kernel, precision) for kernel, precision, _ in convolution_kernels(runtime))
        int8 = sum(n for (_, p), n in convs.items() if p in ("u8", "i8"))
        conv_text = ", ".join(f"{k} {p} x{n}" for (k, p), n in sorted(convs.items()))
        others: dict[str, int] = {}
        for op in runtime.get_ordered_ops():
            info = op.get_rt_info()
            kind = info["layerType"].astype(str) if "layerType" in info else "?"
            if kind not in ("Convolution", "Const", "Input", "Output", "Reshape"):
                others[kind] = others.get(kind, 0) + 1
        other_text = ", ".join(f"{k} x{n}" for k, n in sorted(others.items()))
        print(f"| {label} | **{int8} of {sum(convs.values())} INT8**: {conv_text} | {other_text} |")
        graph.close()


def speed(art: Path, manifest: Manifest, hw: tuple[int, int], scale: float, repeats: int, threads: int) -> None:
    img = (np.random.default_rng(0).random((*hw, 3)) * 255).astype(np.float32)
    x = {"lr": np.ascontiguousarray(img.transpose(2, 0, 1))[None]}
    graphs = {k: _feature_graph(art, manifest, *v, threads) for k, v in FEATURES.items()}
    pipes = {
        (b, p): Pipeline(art, b, precision=p, threads=threads) for b in ("openvino", "ort") for p in ("fp32", "int8")
    }
    runs: dict[str, Callable[[], object]] = {k: (lambda g=g: g.infer(x)) for k, g in graphs.items()}
    for (b, p), pipe in pipes.items():
        runs[f"e2e {b} {p}"] = lambda pipe=pipe: pipe.upscale(pipe.encode(img), scale)
    med = _interleaved(runs, repeats)
    ov, ort = med["OpenVINO FP32"], med["ONNX Runtime FP32"]
    print(f"\n**LR {hw[1]}x{hw[0]}**, x{scale:g}, median of {repeats} interleaved repeats")
    print("\n| stage | variant | ms | vs OpenVINO FP32 | vs ONNX Runtime FP32 |\n|---|---|---|---|---|")
    for label, (backend, _, target) in FEATURES.items():
        m = med[label]
        print(f"| feature stage | {label}{_runs_as(backend, target)} | {m:.1f} | {ov / m:.2f}x | {ort / m:.2f}x |")
    ov_e, ort_e = med["e2e openvino fp32"], med["e2e ort fp32"]
    for (b, p), pipe in pipes.items():
        m = med[f"e2e {b} {p}"]
        form = pipe.feature_spec.file
        print(f"| end to end | {b} {p} ({form}) | {m:.1f} | {ov_e / m:.2f}x | {ort_e / m:.2f}x |")
    for closable in (*graphs.values(), *pipes.values()):
        closable.close()


def shapes(art: Path, manifest: Manifest, threads: int, repeats: int) -> None:
    import openvino as ov

    print("\n**Dynamic shapes on OpenVINO** (feature graph compiled once with dynamic h/w, against a copy compiled")
    print("for the one static shape; ms, median of interleaved repeats)")
    print("\n| graph | LR | static compile | first call (dynamic) | later calls (dynamic) | static | dynamic/static |")
    print("|---|---|---|---|---|---|---|")
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION, **DEFAULT_PROPERTIES}  # as the backend compiles
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    for precision, target in (("fp32", "any"), ("int8", "tensorrt")):
        spec = manifest.graph("feature", "onnx", precision, target)
        data = manifest.read_verified(art, spec)
        dynamic = OpenVinoBackend(data, spec, threads)
        for hw in ((80, 120), (180, 320), (360, 640)):
            model = core.read_model(data)
            model.reshape({"lr": [1, 3, *hw]})
            t0 = time.perf_counter()
            static = core.compile_model(model, "CPU", config).create_infer_request()
            compile_ms = (time.perf_counter() - t0) * 1e3
            x = {"lr": (np.random.default_rng(0).random((1, 3, *hw)) * 255).astype(np.float32)}
            t0 = time.perf_counter()
            dynamic.infer(x)
            first = (time.perf_counter() - t0) * 1e3
            runs = {"static": lambda s=static, x=x: s.infer(x), "dynamic": lambda d=dynamic, x=x: d.infer(x)}
            med = _interleaved(runs, repeats)
            print(
                f"| {spec.file} | {hw[1]}x{hw[0]} | {compile_ms:.0f} | {first:.1f} | {med['dynamic']:.1f} | "
                f"{med['static']:.1f} | {med['dynamic'] / med['static']:.3f} |"
            )
        dynamic.close()
    img = (np.random.default_rng(1).random((180, 320, 3)) * 255).astype(np.float32)
    rows: dict[float, list[str]] = {}
    for backend in ("openvino", "ort"):
        with Pipeline(art, backend, threads=threads) as pipe:
            feats = pipe.encode(img)
            for s in (2.0, 2.3, 3.0, 3.7, 4.0):
                pipe.plan(180, 320, s)  # the host-side plan, computed and cached before the timed calls
                t0 = time.perf_counter()
                pipe.upscale(feats, s)
                first = (time.perf_counter() - t0) * 1e3
                run = {"again": lambda p=pipe, f=feats, s=s: p.upscale(f, s)}
                again = _interleaved(run, max(3, repeats // 3))["again"]
                rows.setdefault(s, []).append(f"{first:.1f} | {again:.1f}")
    print("\n**Upscale stage, LR 320x180** (plan dims dynamic: a new scale is a new shape; ms; plans computed before)")
    print("\n| scale | OpenVINO first call | OpenVINO repeat | ONNX Runtime first call | ONNX Runtime repeat |")
    print("|---|---|---|---|---|")
    for s, cells in rows.items():
        print(f"| x{s:g} | {' | '.join(cells)} |")


def pinning(art: Path, manifest: Manifest, hw: tuple[int, int], scale: float, threads: int, repeats: int) -> None:
    """OpenVINO's thread pinning (its CPU default) on and off, interleaved: feature graphs and the upscale stage."""
    img = (np.random.default_rng(0).random((*hw, 3)) * 255).astype(np.float32)
    x = {"lr": np.ascontiguousarray(img.transpose(2, 0, 1))[None]}
    with Pipeline(art, "ort") as plan_source:
        feeds = {"features": plan_source.encode(img), **plan_feeds(plan_source.plan(*hw, scale))}
    runs: dict[str, Callable[[], object]] = {}
    for pinned in (True, False):
        for kind, precision, target, feed in (
            ("feature", "fp32", "any", x),
            ("feature", "int8", "tensorrt", x),
            ("upscale", "fp32", "any", feeds),
        ):
            spec = manifest.graph(kind, "onnx", precision, target)
            graph = OpenVinoBackend(manifest.read_verified(art, spec), spec, threads, {"ENABLE_CPU_PINNING": pinned})
            runs[f"{spec.file} | {'on' if pinned else 'off'}"] = lambda g=graph, f=feed: g.infer(f)
    med = _interleaved(runs, repeats)
    print(f"\n**OpenVINO thread pinning**, LR {hw[1]}x{hw[0]} (upscale x{scale:g}), median of {repeats} interleaved")
    print("\n| graph | pinning | ms | off / on |\n|---|---|---|---|")
    for key, m in med.items():
        on = med[key.replace("| off", "| on")]
        print(f"| {key} | {m:.1f} | {m / on:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", required=True, help="artifacts with INT8 graphs (metasr calibrate)")
    ap.add_argument("--sizes", default="80x120,180x320,360x640", help="LR sizes HxW, comma-separated")
    ap.add_argument("--scale", type=float, default=4.0, help="end-to-end scale")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="threads of both runtimes (0: their defaults)")
    ap.add_argument("--shapes", action="store_true", help="also measure OpenVINO's dynamic-shape handling")
    ap.add_argument("--pinning", action="store_true", help="also time OpenVINO's thread pinning on and off")
    ap.add_argument("--accuracy", action="store_true", help="also score every variant on Set5 / Set14")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed tables")
    ap.add_argument("--data", default=str(find_shared_data() or "../shared/data"))
    args = ap.parse_args()
    try:
        sizes = [parse_pair(v, "--sizes", "180x320 (HxW)") for v in args.sizes.split(",")]
    except CLIError as e:
        ap.error(str(e))
    if args.repeats < 1 or args.threads < 0 or not 1 < args.scale <= 4:
        ap.error("--repeats must be >= 1, --threads >= 0, --scale in (1, 4]")
    art = Path(args.artifacts)
    manifest = Manifest.read(art)
    if "int8" not in manifest.precisions():
        ap.error(f"{art} has no INT8 graphs: run metasr calibrate --precision int8 first")
    print(
        f"{cpu_summary()}; OpenVINO {openvino.__version__.split('-')[0]}, ONNX Runtime {onnxruntime.__version__}; "
        f"threads {args.threads or 'default'}; load average before: {os.getloadavg()}"
    )
    kernels(art, manifest)
    if not args.no_speed:
        for hw in sizes:
            speed(art, manifest, hw, args.scale, args.repeats, args.threads)
    if args.shapes:
        shapes(art, manifest, args.threads, args.repeats)
    if args.pinning:
        for hw in sizes:
            pinning(art, manifest, hw, args.scale, args.threads, args.repeats)
    if args.accuracy:
        variants = [v for v in ACCURACY if v.precision in manifest.precisions()]
        t0 = time.perf_counter()
        sets = [os.path.join(args.data, s) for s in ("Set5", "Set14")]
        cells = evaluate_precisions(art, sets, [2.0, 3.0, 4.0, 1.5, 2.5, 3.5], variants)
        print("\n**Accuracy**: Y-PSNR change vs ONNX Runtime FP32 (dB) / PSNR vs its output, pooled / worst image\n")
        print(format_cells(cells))
        print(f"\n({time.perf_counter() - t0:.0f} s)")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
