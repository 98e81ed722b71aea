"""Whole-process peak memory and time of `metasr upscale` under one memory bound, with where the time goes.

Cases (bundled model): inputs 750x500, 1500x1000, 3000x2000 and 6000x4000 at x1.1, x2.7 and x4 (``--sizes``,
``--scales`` to choose), each run as ``metasr upscale IN -o OUT.png --scale R --memory-mb M --timings`` in a
fresh process, ``--repeats`` times. Inputs are made once from a photo of the shared data (BSD200, resized with
Pillow's bicubic) into a temporary folder. Reported per case: median wall time of the process (start to exit),
its CPU time, its peak resident memory (the child's own ``VmHWM``, printed as it exits: a forked child's
``ru_maxrss`` starts at the parent's size), the memory the run planned (``--timings`` prints the plan), the
time per output pixel, the stage split (decode, features, upscale, encode; encode runs in a thread beside
upscale, so the stages add up to more than the wall time) and the load average around the runs (the machine
may be shared: compare numbers taken at similar load). Ends with whether every peak stayed under the bound.

    python benchmarks/upscale_cli.py [--memory-mb 1024] [--repeats 1] [--sizes 750x500 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

SIZES = ["750x500", "1500x1000", "3000x2000", "6000x4000"]
SCALES = [1.1, 2.7, 4.0]
_STAGES = ("decode", "features", "upscale", "encode")
_TIMINGS = re.compile(r"(decode|features|upscale|encode) (-?[\d.]+) s")
_PLANNED = re.compile(r"memory: (\d+) MiB planned")
_TILE = re.compile(r"feature tile (\d+)")
_CHILD = (
    "import sys; from metasr.cli import main; rc = main(sys.argv[1:]); from metasr.measure import status_kib; "
    "print('PEAK_KIB', status_kib('VmHWM'), file=sys.stderr); sys.exit(rc)"
)


def _source_photo() -> Path:
    from metasr.bundled import find_shared_data

    data = find_shared_data()
    if data is None or not (data / "BSD200").is_dir():
        sys.exit("needs the shared data (BSD200): set METASR_DATA")
    return sorted((data / "BSD200").iterdir())[0]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                vnni = "avx512_vnni" in flags
                return f"{line.split(':', 1)[1].strip()} ({'with' if vnni else 'without'} AVX-512 VNNI)"
    except OSError:
        pass
    return "unknown CPU"


def _run_once(args: list[str], timeout: float) -> dict[str, float]:
    """Run one `metasr` process; its wall and CPU time, peak memory, planned memory and stage split."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    before = os.times()
    res = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=timeout)
    after = os.times()
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"metasr {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    stages = {k: float(v) for k, v in _TIMINGS.findall(res.stdout)}
    planned = _PLANNED.search(res.stdout)
    return {
        "wall_s": wall,
        "cpu_s": (after.children_user - before.children_user) + (after.children_system - before.children_system),
        "peak_mib": int(res.stderr.split("PEAK_KIB")[-1].split()[0]) / 1024,
        "planned_mib": float(planned.group(1)) if planned else float("nan"),
        "feature_tile": float(tile.group(1)) if (tile := _TILE.search(res.stdout)) else float("nan"),
        "load_before": load,
        "load_after": os.getloadavg()[0],
        **stages,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory-mb", type=float, default=1024)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sizes", nargs="+", default=SIZES, metavar="WxH")
    ap.add_argument("--scales", nargs="+", type=float, default=SCALES)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--artifacts", help="artifact directory (default: the bundled model's, exported once)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.artifacts:
        artifacts = Path(args.artifacts)
    else:
        from metasr.artifacts import default_artifacts

        artifacts = default_artifacts()
    photo = Image.open(_source_photo()).convert("RGB")
    print(f"metasr upscale, bundled model, {os.cpu_count()} CPUs, {_cpu_model()}; --memory-mb {args.memory_mb:g}; "
          f"median of {args.repeats} run(s), peak = max", flush=True)  # fmt: skip
    print("| input | scale | output Mpx | wall s | CPU s | peak MiB | planned MiB | ns / output px | decode | features "
          "| upscale | encode | load |", flush=True)  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            w, h = map(int, size.split("x"))
            src = Path(tmp) / f"in_{w}x{h}.png"
            photo.resize((w, h), Image.BICUBIC).save(src)
            for scale in args.scales:
                cmd = ["upscale", str(src), "-o", str(Path(tmp) / "out.png"), "--scale", str(scale)]
                cmd += ["--artifacts", str(artifacts), "--memory-mb", str(args.memory_mb), "--timings"]
                cmd += ["--max-pixels", str(10**9)]  # 6000x4000 at x2.7 and x4 are 175 and 384 Mpx
                runs = [_run_once(cmd, args.timeout) for _ in range(args.repeats)]
                r = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
                r["peak_mib"] = max(x["peak_mib"] for x in runs)
                out_px = int(scale * w) * int(scale * h)
                r.update(input=size, scale=scale, out_mpx=out_px / 1e6, ns_per_px=r["wall_s"] / out_px * 1e9)
                rows.append({**r, "runs": runs})
                stages = " | ".join(f"{r.get(k, float('nan')):.2f}" for k in _STAGES)
                print(f"| {size} | x{scale:g} | {r['out_mpx']:.1f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
                      f"| {r['peak_mib']:.0f} | {r['planned_mib']:.0f} | {r['ns_per_px']:.0f} | {stages} "
                      f"| {r['load_before']:.1f}-{r['load_after']:.1f} |", flush=True)  # fmt: skip
    over = [r for r in rows if r["peak_mib"] > args.memory_mb]
    worst = max(r["peak_mib"] / args.memory_mb for r in rows)
    print(f"peak under the {args.memory_mb:g} MiB bound in {len(rows) - len(over)} of {len(rows)} cases "
          f"(largest peak {100 * worst:.0f}% of it); load average now {os.getloadavg()}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
