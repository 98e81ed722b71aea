"""Measurement helpers shared by `metasr bench` and the scripts in benchmarks/ (stdlib only, Linux memory)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["cpu_summary", "median_time", "plan_case", "reset_peak_rss", "status_kib"]


def cpu_summary() -> str:
    """The CPU model, core count and its INT8 / bf16 instructions, e.g. ``"AMD EPYC, 2 cores, with AVX-512
    VNNI, with AVX512_BF16"`` (from /proc/cpuinfo; "unknown CPU" elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown CPU")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    vnni = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-VNNI" if "avx_vnni" in flags else None
    parts = [model, f"{os.cpu_count()} cores", f"with {vnni}" if vnni else "without VNNI"]
    parts.append("with AVX512_BF16" if "avx512_bf16" in flags or "amx_bf16" in flags else "without bf16")
    return ", ".join(parts)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls, after one warm-up call."""
    fn()  # warm-up (plans, arenas, kernels)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def status_kib(field: str) -> int:
    """A memory field of /proc/self/status in KiB (``VmRSS``: resident now, ``VmHWM``: peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset VmHWM to the current resident size (Linux >= 4.0); returns that size in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib("VmRSS")


def plan_case(text: str) -> tuple[float, int, int, float]:
    """A benchmark case ``SCALE:HxW:BUDGET_MB`` (features h x w, the upscale budget) -> (scale, h, w, budget)."""
    try:
        scale, size, budget = text.split(":")
        h, w = size.lower().split("x")
        return float(scale), int(h), int(w), float(budget)
    except ValueError:
        raise ValueError(f"a case is SCALE:HxW:BUDGET_MB, e.g. 3.3:1000x1500:512; got {text!r}") from None

