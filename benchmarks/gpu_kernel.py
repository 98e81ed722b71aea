"""The MetaUpscale Triton kernel on a CUDA GPU, against the grouped PyTorch path and the device's floors.

For a 1920x1080 output (C = 64, one image, random features and filters) at each scale it times, on the
same GPU in one process: the kernel in FP32 and FP16 (float32 accumulation), and the grouped PyTorch path
(`metasr.upscale.meta_upscale`, FP32, including its host-side grouping, as `MetaSR.upscale` runs it). The
LR size is ceil(1080 / r) x ceil(1920 / r) and the output is cropped to 1080 x 1920 through the op's
index vectors (a tile is a valid input). It reports time per output megapixel and the achieved rates
against floors measured in the same run: DRAM bandwidth (a device-to-device copy), FP32 CUDA-core
throughput (an FP32 GEMM with TF32 off) and FP16 tensor throughput (an FP16 GEMM).

Traffic counted: features + the filters of the offset pairs + index vectors read once, output written
once (the least any implementation must move); work: 2 * 27 * C FLOP per output pixel.

    python benchmarks/gpu_kernel.py [--scales 2 3.3 4] [--channels 64] [--sweep] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

import numpy as np
import torch
from metasr.runtime.projection import project

from metasr.kernels import KernelConfig, default_config, meta_upscale_triton, meta_upscale_triton_filter
from metasr.upscale import meta_upscale

OUT_H, OUT_W = 1080, 1920


def cuda_time_ms(fn, repeats: int = 20) -> float:
    """Median CUDA-event time of ``fn()`` in ms, after two warm-up calls."""
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def device_floors() -> dict[str, float]:
    """Measured: copy bandwidth (GB/s, read + write), FP32 GEMM (TF32 off) and FP16 GEMM (TFLOP/s)."""
    x = torch.empty(1 << 28, dtype=torch.float32, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    copy_ms = cuda_time_ms(lambda: y.copy_(x), 10)
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 8192
    a32, b32 = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
    fp32_ms = cuda_time_ms(lambda: a32 @ b32, 5)
    a16, b16 = a32.half(), b32.half()
    fp16_ms = cuda_time_ms(lambda: a16 @ b16, 10)
    return {
        "copy_gbps": 2 * (1 << 30) / copy_ms / 1e6,
        "fp32_tflops": 2 * n**3 / fp32_ms / 1e9,
        "fp16_tflops": 2 * n**3 / fp16_ms / 1e9,
    }


def problem(scale: float, channels: int, dtype: torch.dtype):
    h, w = math.ceil(OUT_H / scale), math.ceil(OUT_W / scale)
    plan = project(h, w, scale, max_scale=max(4.0, scale))
    g = torch.Generator(device="cuda").manual_seed(0)
    pr, pc = plan.rows.offsets.size, plan.cols.offsets.size
    feats = torch.randn(1, channels, h, w, device="cuda", generator=g, dtype=torch.float32).to(dtype) * 10
    weights = (torch.randn(pr, pc, 27 * channels, device="cuda", generator=g) * 0.05).to(dtype)

    def idx(a: np.ndarray, n: int) -> torch.Tensor:
        return torch.from_numpy(a[:n].astype(np.int64)).cuda()

    index = (idx(plan.rows.src, OUT_H), idx(plan.rows.offset_index, OUT_H), idx(plan.cols.src, OUT_W),
             idx(plan.cols.offset_index, OUT_W))  # fmt: skip
    return plan, feats, weights, index


def hints(plan, device: str = "cuda") -> tuple[torch.Tensor, ...]:
    """The grouping hints (inputs 6-11) of the cropped plan, for the filter-stationary kernel."""
    from metasr.runtime.feeds import axis_hints

    rows = axis_hints(plan.rows.src[:OUT_H], plan.rows.offset_index[:OUT_H])
    cols = axis_hints(plan.cols.src[:OUT_W], plan.cols.offset_index[:OUT_W])
    return tuple(torch.from_numpy(a).to(device) for a in (*rows, *cols))


def traffic_bytes(feats: torch.Tensor, weights: torch.Tensor) -> int:
    return feats.numel() * feats.element_size() + weights.numel() * weights.element_size() + \
        3 * OUT_H * OUT_W * feats.element_size() + 8 * 2 * (OUT_H + OUT_W)  # fmt: skip


def run_scale(scale: float, channels: int, floors: dict[str, float], repeats: int) -> list[dict]:
    rows = []
    mpx = OUT_H * OUT_W / 1e6
    flop = 2 * 27 * channels * OUT_H * OUT_W
    ref = None
    for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        plan, feats, weights, index = problem(scale, channels, dtype)
        ms = cuda_time_ms(lambda: meta_upscale_triton(feats, weights, *index), repeats)  # noqa: B023
        out = meta_upscale_triton(feats, weights, *index)
        if ref is None:  # the grouped PyTorch path on the same GPU, FP32, whole plan then cropped
            pr, pc, k = weights.shape
            table = weights.view(pr, pc, k // 3, 3)
            grouped_ms = cuda_time_ms(lambda: meta_upscale(feats, table, plan), max(3, repeats // 4))  # noqa: B023
            ref = meta_upscale(feats, table, plan)[:, :, :OUT_H, :OUT_W]
            rows.append(_row(scale, "grouped PyTorch (fp32)", grouped_ms, mpx, flop, traffic_bytes(feats, weights),
                             floors, "fp32", plan, 0.0))  # fmt: skip
        err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
        rows.append(_row(scale, f"Triton kernel ({name})", ms, mpx, flop, traffic_bytes(feats, weights), floors,
                         name, plan, err))  # fmt: skip
        hint = hints(plan)  # the filter-stationary kernel (behind a flag until this table shows it faster)
        ms = cuda_time_ms(lambda: meta_upscale_triton_filter(feats, weights, *index, *hint), repeats)  # noqa: B023
        out = meta_upscale_triton_filter(feats, weights, *index, *hint)
        err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
        rows.append(_row(scale, f"filter-stationary kernel ({name})", ms, mpx, flop, traffic_bytes(feats, weights),
                         floors, name, plan, err))  # fmt: skip
    return rows


def _row(scale, impl, ms, mpx, flop, nbytes, floors, dtype, plan, err) -> dict:
    gbps = nbytes / ms / 1e6
    tflops = flop / ms / 1e9
    peak = floors["fp32_tflops"] if dtype == "fp32" else floors["fp16_tflops"]
    return {
        "scale": scale, "impl": impl, "lr": f"{plan.in_h}x{plan.in_w}",
        "pairs": plan.rows.offsets.size * plan.cols.offsets.size,
        "ms": ms, "ms_per_mpx": ms / mpx, "gbps": gbps, "bw_frac": gbps / floors["copy_gbps"], "tflops": tflops,
        "flop_frac": tflops / peak, "floor_ms": max(nbytes / floors["copy_gbps"] / 1e6, flop / peak / 1e9),
        "max_rel_err": err,
    }  # fmt: skip


def sweep(channels: int, repeats: int) -> list[dict]:
    """Time block shapes (block_h x block_w, channel unroll, warps) at x3.3 and x4."""
    configs = [
        KernelConfig(4, 32, 4, 4), KernelConfig(4, 32, 2, 4), KernelConfig(4, 32, 8, 4), KernelConfig(4, 32, 16, 4),
        KernelConfig(2, 32, 4, 4), KernelConfig(8, 32, 4, 8), KernelConfig(4, 64, 4, 8), KernelConfig(1, 128, 4, 4),
        KernelConfig(8, 16, 4, 4), KernelConfig(4, 32, 4, 2), KernelConfig(2, 64, 8, 8),
    ]  # fmt: skip
    out = []
    for scale in (3.3, 4.0):
        for dtype in (torch.float32, torch.float16):
            _, feats, weights, index = problem(scale, channels, dtype)
            for cfg in configs:
                ms = cuda_time_ms(lambda: meta_upscale_triton(feats, weights, *index, config=cfg), repeats)  # noqa: B023
                out.append({"scale": scale, "dtype": str(dtype).split(".")[-1], "config": cfg.__dict__, "ms": ms})
                print(f"sweep x{scale} {out[-1]['dtype']} {cfg}: {ms:.3f} ms", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0, 3.3, 4.0])
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sweep", action="store_true", help="also time several block shapes")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu_kernel.py needs a CUDA GPU (none found): nothing measured")
        return 2
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, cc {props.major}.{props.minor}, {props.multi_processor_count} SMs; "
          f"torch {torch.__version__}; default config fp32 {default_config('fp32')}")  # fmt: skip
    floors = device_floors()
    print(f"measured floors: copy {floors['copy_gbps']:.0f} GB/s, FP32 GEMM (no TF32) {floors['fp32_tflops']:.1f} "
          f"TFLOP/s, FP16 GEMM {floors['fp16_tflops']:.1f} TFLOP/s")  # fmt: skip
    rows = [r for s in args.scales for r in run_scale(s, args.channels, floors, args.repeats)]
    print("\n| scale | LR | pairs | implementation | ms | ms / output Mpx | GB/s | of copy BW | TFLOP/s | of GEMM peak "
          "| floor ms | x floor | max rel err |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| x{r['scale']:g} | {r['lr']} | {r['pairs']} | {r['impl']} | {r['ms']:.3f} | {r['ms_per_mpx']:.3f} | "
              f"{r['gbps']:.0f} | {r['bw_frac']:.1%} | {r['tflops']:.2f} | {r['flop_frac']:.1%} | {r['floor_ms']:.3f} "
              f"| {r['ms'] / r['floor_ms']:.1f}x | {r['max_rel_err']:.1e} |")  # fmt: skip
    for s in args.scales:
        g = next(r for r in rows if r["scale"] == s and r["impl"].startswith("grouped"))
        for r in rows:
            if r["scale"] == s and r["impl"].startswith("Triton"):
                print(f"x{s:g}: {r['impl']} is {g['ms'] / r['ms']:.1f}x faster than the grouped PyTorch path")
    result = {"device": props.name, "cc": f"{props.major}.{props.minor}", "floors": floors, "rows": rows}
    if args.sweep:
        result["sweep"] = sweep(args.channels, max(5, args.repeats // 2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
