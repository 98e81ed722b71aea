"""Meta-Upscale stage: the fast path against the official formulation, side by side in one process.

For a C x 128 x 128 feature map (random weights) at each scale it measures, for both implementations,
the median wall time of the whole upscale stage (weight prediction + contraction) and the peak extra
resident memory (Linux VmHWM minus VmRSS before the call, each variant in a fresh subprocess so no
allocator reuse hides anything), and prints the ratios. The fast path's contraction
time is also given as a multiple of the compute floor: 2*C*9*3 FLOP per output pixel at the fp32 GEMM
rate measured here, in this run.

    python benchmarks/upscale_stage.py [--size 128] [--channels 64] [--scales 3.3 4.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from metasr.runtime.projection import project
from oracle import oracle_upscale

from metasr.measure import median_time, reset_peak_rss, status_kib
from metasr.upscale import meta_upscale
from metasr.weight_predictor import WeightPredictor


def _setup(channels: int, size: int) -> tuple[WeightPredictor, torch.Tensor]:
    torch.manual_seed(0)
    return WeightPredictor(channels).eval(), torch.randn(1, channels, size, size)


def _run(which: str, p2w: WeightPredictor, feats: torch.Tensor, scale: float) -> torch.Tensor:
    if which == "oracle":
        return oracle_upscale(feats, p2w, scale)
    plan = project(feats.shape[2], feats.shape[3], scale)
    return meta_upscale(feats, p2w.table(plan, feats), plan)


def _measure_child(which: str, channels: int, size: int, scale: float) -> None:
    """In a fresh process: peak resident memory above the post-setup level during one call (MiB)."""
    p2w, feats = _setup(channels, size)
    with torch.no_grad():
        _run(which, p2w, torch.randn(1, channels, 8, 8), 2.0)  # load kernels, warm the allocator minimally
        base = reset_peak_rss()
        _run(which, p2w, feats, scale)
    print((status_kib("VmHWM") - base) / 1024)


def peak_extra_mib(which: str, channels: int, size: int, scale: float) -> float:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure-child",
            which,
            "--channels",
            str(channels),
            "--size",
            str(size),
            "--scales",
            str(scale),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def gemm_rate(n: int = 2048) -> float:
    """Measured fp32 GEMM FLOP/s on this machine (median of repeats)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_time(lambda: a @ b, 7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--scales", type=float, nargs="+", default=[3.3, 4.0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--oracle-repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--measure-child", choices=["fast", "oracle"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_child:
        _measure_child(args.measure_child, args.channels, args.size, args.scales[0])
        return

    c, s = args.channels, args.size
    p2w, feats = _setup(c, s)
    rate = gemm_rate()
    print(f"threads {torch.get_num_threads()}, fp32 GEMM {rate / 1e9:.1f} GFLOP/s, features {c}x{s}x{s}")
    rows = []
    with torch.no_grad():
        for scale in args.scales:
            plan = project(s, s, scale)
            table = p2w.table(plan, feats)

            def fast(scale=scale):
                return _run("fast", p2w, feats, scale)

            def contract(plan=plan, table=table):
                return meta_upscale(feats, table, plan)

            def official(scale=scale):
                return _run("oracle", p2w, feats, scale)

            err = (fast() - official()).abs().max().item()
            t_fast, t_contract = median_time(fast, args.repeats), median_time(contract, args.repeats)
            t_oracle = median_time(official, args.oracle_repeats)
            m_fast, m_oracle = peak_extra_mib("fast", c, s, scale), peak_extra_mib("oracle", c, s, scale)
            out_h, out_w = plan.out_size
            floor = out_h * out_w * 2 * c * 9 * 3 / rate
            rows.append(
                dict(
                    scale=scale,
                    out=f"{out_h}x{out_w}",
                    pairs=plan.rows.offsets.size * plan.cols.offsets.size,
                    fast_ms=t_fast * 1e3,
                    contract_ms=t_contract * 1e3,
                    oracle_ms=t_oracle * 1e3,
                    speedup=t_oracle / t_fast,
                    fast_mib=m_fast,
                    oracle_mib=m_oracle,
                    mem_ratio=m_oracle / max(m_fast, 1e-3),
                    floor_ms=floor * 1e3,
                    contract_vs_floor=t_contract / floor,
                    max_abs_err=err,
                )
            )
    head = (
        "scale",
        "output",
        "pairs",
        "fast ms",
        "(contract)",
        "oracle ms",
        "speed-up",
        "fast MiB",
        "oracle MiB",
        "mem ratio",
        "floor ms",
        "contract/floor",
        "max|err|",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(
            f"| x{r['scale']:g} | {r['out']} | {r['pairs']} | {r['fast_ms']:.1f} | {r['contract_ms']:.1f} | "
            f"{r['oracle_ms']:.0f} | {r['speedup']:.0f}x | {r['fast_mib']:.1f} | {r['oracle_mib']:.0f} | "
            f"{r['mem_ratio']:.0f}x | {r['floor_ms']:.1f} | {r['contract_vs_floor']:.1f}x | {r['max_abs_err']:.1e} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"gemm_gflops": rate / 1e9, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
