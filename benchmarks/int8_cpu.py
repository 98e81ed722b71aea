"""INT8 on ONNX Runtime CPU: the CPU form (uint8 activations, int8 weights) against FP32, interleaved in one run.

    python benchmarks/int8_cpu.py [--artifacts artifacts/small] [--rdn-artifacts DIR | --no-rdn] [--repeats 15]
        [--sizes 80x120,180x320] [--threads N] [--profile] [--ceiling]

Models: the bundled small model at each LR size of ``--sizes`` (its calibrated artifacts if given, else
calibrated here on T91) and the RDN preset with random weights (timing does not depend on them; calibrated
here on a few T91 crops with the rules only, no sensitivity pass). Per model, each repeat times every variant
once, in turn: the feature stage (one call of each feature graph on the whole image) and end to end (as
`Pipeline` runs them: its feature stage, tiled above 512 pixels a side, + the FP32 upscale stage at x4);
medians and ratios are printed, with the TensorRT form's feature stage beside them (it is made for TensorRT,
not for this CPU). ``--threads N`` sets ONNX Runtime's intra-op threads for every session (0, the
default: ONNX Runtime's own choice, one per physical core).
With ``--ceiling``, the bundled model's rows gain the CPU form with the calibration's rules only (every
activation after the image INT8: what ``metasr calibrate`` writes when its sensitivity pass keeps nothing; built
here from the artifacts' ranges file): the speed the accuracy gate gives up, not a graph to ship.
With ``--profile``, ONNX Runtime's profiler also splits the bundled model's feature stage by operator (the
kernels ONNX Runtime runs after its graph optimizations), FP32 beside the INT8 CPU form.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from metasr.calibration.calibrate import CalibrationConfig, calibrate
from metasr.export import export_onnx
from metasr.runtime.backends import open_backend
from metasr.runtime.pipeline import Pipeline

from metasr.bundled import bundled_model_path, find_shared_data
from metasr.checkpoint import load_model
from metasr.config import preset
from metasr.limits import MAX_BUDGET_DB, REFERENCE_PSNR_RANGE
from metasr.measure import cpu_summary
from metasr.model import MetaSR


def _calibrated(model: MetaSR, out: Path, t91: Path, quick: bool) -> Path:
    export_onnx(model, out)
    cfg = CalibrationConfig(image_dirs=(str(t91),), precision="int8", crops=32, held_apart=8)
    if quick:  # random weights: ranges from a few crops, the image rule only (an accuracy budget means nothing:
        # the largest budget, measured against the crops' own FP32 error, which random weights make huge)
        cfg = CalibrationConfig(
            image_dirs=(str(t91),),
            precision="int8",
            crops=8,
            held_apart=2,
            budget_db=MAX_BUDGET_DB,
            reference_psnr_db=REFERENCE_PSNR_RANGE[0],
            min_psnr_db=0.0,
        )
    if not calibrate(out, cfg).met:
        raise SystemExit(f"calibration of {out} missed its budget")
    return out


def _rules_only(art: Path) -> bytes:
    """The CPU form of ``art``'s feature graph with the calibration's rules only, from its ranges file."""
    from metasr.calibration.int8_rules import anchor_layout, ruled_graph
    from metasr.calibration.quantize import ORT_CPU, quantize_graph
    from metasr.calibration.ranges import TensorRanges
    from metasr.runtime.manifest import Manifest

    ranges_file = art / "calibration.int8.ranges.json"
    if not ranges_file.is_file():
        raise SystemExit(f"--ceiling needs {ranges_file} (made by metasr calibrate --precision int8)")
    model = onnx.load(str(art / Manifest.read(art).graph("feature").file))
    quantized = quantize_graph(model, TensorRanges.from_json(ranges_file.read_text()), ORT_CPU)
    return anchor_layout(ruled_graph(quantized, model, ORT_CPU)[0], ORT_CPU)[0].SerializeToString()


def _bench(
    name: str, art: Path, lr_hw: tuple[int, int], scale: float, repeats: int, threads: int, ceiling: bool = False
) -> None:
    img = (np.random.default_rng(0).random((*lr_hw, 3)) * 255).astype(np.float32)
    fp32, int8 = Pipeline(art, threads=threads), Pipeline(art, precision="int8", threads=threads)
    manifest = fp32.manifest
    specs = {
        "fp32": manifest.graph("feature"),
        "cpu": manifest.graph("feature", "onnx", "int8", "ort-cpu"),
        "trt": manifest.graph("feature", "onnx", "int8", "tensorrt"),
    }
    # the feature stage: one call of each feature graph on the whole image (no tiling), the same for every form
    graphs = {k: open_backend("ort", s, manifest.read_verified(art, s), threads) for k, s in specs.items()}
    if ceiling:
        graphs["rules"] = open_backend("ort", specs["cpu"], _rules_only(art), threads)
    x = {"lr": np.ascontiguousarray(img.transpose(2, 0, 1))[None]}
    runs = {f"{k} feature": (lambda g=g: g.infer(x)) for k, g in graphs.items()}
    runs["fp32 end to end"] = lambda: fp32.upscale(fp32.encode(img), scale)
    runs["cpu end to end"] = lambda: int8.upscale(int8.encode(img), scale)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up: plans, arenas
        fn()
    for _ in range(repeats):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"\n**{name}**, LR {lr_hw[1]}x{lr_hw[0]} at x{scale:g}, median of {repeats} interleaved repeats")
    print("\n| stage | FP32 ms | INT8 CPU form ms | speed-up | INT8 TensorRT form ms (on CPU) |")
    print("|---|---|---|---|---|")
    f, q, t = med["fp32 feature"], med["cpu feature"], med["trt feature"]
    print(f"| feature stage | {f:.1f} | {q:.1f} | **{f / q:.2f}x** | {t:.1f} ({f / t:.2f}x) |")
    e, qe = med["fp32 end to end"], med["cpu end to end"]
    print(f"| end to end | {e:.1f} | {qe:.1f} | **{e / qe:.2f}x** | - |")
    if ceiling:
        r = med["rules feature"]
        print(f"| feature stage, CPU form, rules only (no accuracy gate) | {f:.1f} | {r:.1f} | {f / r:.2f}x | - |")


def _op_times(path: Path, x: np.ndarray, runs: int, threads: int, warmup: int = 3) -> dict[str, float]:
    """Mean ms per run spent in each operator type (ONNX Runtime's profiler; warm-up runs left out)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.gettempdir()) / "metasr-int8-profile")
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(warmup + runs):
        session.run(None, {"lr": x})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (warmup + runs)  # the same kernels on every run
    times: dict[str, float] = collections.defaultdict(float)
    for e in kernels[warmup * per_run :]:
        times[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return dict(times)


def _profile(art: Path, lr_hw: tuple[int, int], runs: int, threads: int) -> None:
    from metasr.runtime.manifest import Manifest

    manifest = Manifest.read(art)
    x = (np.random.default_rng(0).random((1, 3, *lr_hw)) * 255).astype(np.float32)
    fp32 = _op_times(art / manifest.graph("feature").file, x, runs, threads)
    int8 = _op_times(art / manifest.graph("feature", "onnx", "int8", "ort-cpu").file, x, runs, threads)
    print(f"\n**bundled small model, feature stage by operator** (LR {lr_hw[1]}x{lr_hw[0]}, mean of {runs} runs)")
    print("\n| operator | FP32 ms | INT8 CPU form ms |\n|---|---|---|")
    for op in sorted(set(fp32) | set(int8), key=lambda o: -max(fp32.get(o, 0.0), int8.get(o, 0.0))):
        print(f"| {op} | {fp32.get(op, 0.0):.2f} | {int8.get(op, 0.0):.2f} |")
    f, q = sum(fp32.values()), sum(int8.values())
    print(f"| **all** | {f:.2f} | {q:.2f} ({f / q:.2f}x) |")


def _hw(text: str, flag: str) -> tuple[int, int]:
    """``"HxW"`` -> (H, W), both positive; else ``ValueError``."""
    parts = text.strip().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{flag} wants HxW sizes such as 180x320, got {text!r}")
    return int(parts[0]), int(parts[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", help="the bundled model's calibrated artifacts (default: calibrate here)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rdn-lr", default="40x60", help="RDN LR size HxW (small: RDN's feature stage is heavy)")
    ap.add_argument("--sizes", default="80x120,180x320", help="the bundled model's LR sizes HxW, comma-separated")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    ap.add_argument("--ceiling", action="store_true", help="also time the CPU form with the rules only")
    ap.add_argument("--profile", action="store_true", help="split the bundled model's feature stage by operator")
    ap.add_argument("--rdn-artifacts", help="the RDN preset's calibrated artifacts (default: make them here)")
    ap.add_argument("--no-rdn", action="store_true", help="the bundled model only")
    args = ap.parse_args()
    try:
        sizes = [_hw(v, "--sizes") for v in args.sizes.split(",")]
        rdn_hw = _hw(args.rdn_lr, "--rdn-lr")
    except ValueError as e:
        ap.error(str(e))
    if args.threads < 0:
        ap.error(f"--threads wants an integer >= 0, got {args.threads}")
    if args.no_rdn and args.rdn_artifacts:
        ap.error("--rdn-artifacts and --no-rdn exclude each other")
    data = find_shared_data()
    if data is None and not (args.artifacts and (args.rdn_artifacts or args.no_rdn)):
        raise SystemExit("needs the shared data (T91) for calibration crops: set METASR_DATA")
    ort_threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}" if args.threads else "default threads"
    print(
        f"{cpu_summary()}; load average before: "
        f"{os.getloadavg()}; ONNX Runtime {ort_threads}; torch threads {torch.get_num_threads()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        small = (
            Path(args.artifacts)
            if args.artifacts
            else _calibrated(load_model(bundled_model_path()), Path(tmp) / "small", data / "T91", quick=False)
        )
        for hw in sizes:
            _bench("bundled small model", small, hw, 4.0, args.repeats, args.threads, args.ceiling)
            if args.profile:
                _profile(small, hw, args.repeats, args.threads)
        if args.no_rdn:
            print(f"\nload average after: {os.getloadavg()}")
            return
        torch.manual_seed(0)
        rdn = (
            Path(args.rdn_artifacts)
            if args.rdn_artifacts
            else _calibrated(MetaSR(preset("rdn")).eval(), Path(tmp) / "rdn", data / "T91", quick=True)
        )
        _bench("RDN preset (random weights)", rdn, rdn_hw, 4.0, max(3, args.repeats // 3), args.threads)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
