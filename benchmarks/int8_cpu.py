"""INT8 on ONNX Runtime CPU: the CPU form (uint8 activations, int8 weights) against FP32, interleaved in one run.

    python benchmarks/int8_cpu.py [--artifacts artifacts/small] [--repeats 15]

Models: the bundled small model (its calibrated artifacts if given, else calibrated here on T91) and the
RDN preset with random weights (timing does not depend on them; calibrated here on a few T91 crops with the
image rule only, no sensitivity pass). Per model, each repeat times every variant once, in turn: the feature
stage and end to end (feature + the FP32 upscale stage at x4, as `Pipeline` runs them); medians and ratios are
printed, with the TensorRT form's feature stage beside them (it is made for TensorRT, not for this CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from metasr.calibration.calibrate import CalibrationConfig, calibrate
from metasr.export import export_onnx
from metasr.runtime.backends import open_backend
from metasr.runtime.pipeline import Pipeline

from metasr.bundled import bundled_model_path, find_shared_data
from metasr.checkpoint import load_model
from metasr.config import preset
from metasr.model import MetaSR


def _calibrated(model: MetaSR, out: Path, t91: Path, quick: bool) -> Path:
    export_onnx(model, out)
    cfg = CalibrationConfig(image_dirs=(str(t91),), precision="int8", crops=32, held_apart=8)
    if quick:  # random weights: ranges from a few crops, the image rule only (an accuracy budget means nothing)
        cfg = CalibrationConfig(
            image_dirs=(str(t91),), precision="int8", crops=8, held_apart=2, budget_db=1e9, min_psnr_db=0.0
        )
    if not calibrate(out, cfg).met:
        raise SystemExit(f"calibration of {out} missed its budget")
    return out


def _bench(name: str, art: Path, lr_hw: tuple[int, int], scale: float, repeats: int) -> None:
    img = (np.random.default_rng(0).random((*lr_hw, 3)) * 255).astype(np.float32)
    fp32, int8 = Pipeline(art), Pipeline(art, precision="int8")
    trt_spec = fp32.manifest.graph("feature", "onnx", "int8", "tensorrt")
    trt = open_backend("ort", trt_spec, fp32.manifest.read_verified(art, trt_spec))
    x = {"lr": np.ascontiguousarray(img.transpose(2, 0, 1))[None]}
    runs = {
        "fp32 feature": lambda: fp32.encode(img),
        "int8 CPU form feature": lambda: int8.encode(img),
        "int8 TensorRT form feature": lambda: trt.infer(x),
        "fp32 end to end": lambda: fp32.upscale(fp32.encode(img), scale),
        "int8 CPU form end to end": lambda: int8.upscale(int8.encode(img), scale),
    }
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
    f, q, t = med["fp32 feature"], med["int8 CPU form feature"], med["int8 TensorRT form feature"]
    print(f"| feature stage | {f:.1f} | {q:.1f} | **{f / q:.2f}x** | {t:.1f} ({f / t:.2f}x) |")
    e, qe = med["fp32 end to end"], med["int8 CPU form end to end"]
    print(f"| end to end | {e:.1f} | {qe:.1f} | **{e / qe:.2f}x** | - |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", help="the bundled model's calibrated artifacts (default: calibrate here)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rdn-lr", default="40x60", help="RDN LR size HxW (small: RDN's feature stage is heavy)")
    args = ap.parse_args()
    data = find_shared_data()
    if data is None:
        raise SystemExit("needs the shared data (T91) for calibration crops: set METASR_DATA")
    print(
        f"load average before: {os.getloadavg()}; ONNX Runtime default threads; torch threads {torch.get_num_threads()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        small = (
            Path(args.artifacts)
            if args.artifacts
            else _calibrated(load_model(bundled_model_path()), Path(tmp) / "small", data / "T91", quick=False)
        )
        _bench("bundled small model", small, (80, 120), 4.0, args.repeats)
        torch.manual_seed(0)
        rdn = _calibrated(MetaSR(preset("rdn")).eval(), Path(tmp) / "rdn", data / "T91", quick=True)
        h, w = (int(v) for v in args.rdn_lr.split("x"))
        _bench("RDN preset (random weights)", rdn, (h, w), 4.0, max(3, args.repeats // 3))
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
