"""Whole-process peak memory and time of `metasr upscale` on large inputs, with where the time goes.

Cases (bundled model): x4 from 750x500 and from 1500x1000, x1.1 from 2000x2000. Inputs are made once from a
photo of the shared data (BSD200, resized with Pillow's bicubic) into a temporary folder. Each case runs
`metasr upscale IN -o OUT.png --scale R --timings` in a fresh process, ``--repeats`` times; reported: median
wall time of the process (start to exit), its CPU time, peak resident memory (``ru_maxrss`` of that
process), the stage split printed by ``--timings`` (decode, features, upscale, encode; encode runs in a
thread beside upscale, so the stages add up to more than the wall time) and the load average around the
runs (the machine is shared: compare numbers taken at similar load).

    python benchmarks/upscale_cli.py [--repeats 3] [--artifacts DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

CASES = [((750, 500), 4.0), ((1500, 1000), 4.0), ((2000, 2000), 1.1)]
TARGETS = {"peak_mib": 1536, "wall_s": 8.0, "growth": 5.0}  # 1500x1000 x4; 4x larger input at most 5x the time
_TIMINGS = re.compile(r"(decode|features|upscale|encode) ([\d.]+) s")


def _source_photo() -> Path:
    from metasr.bundled import find_shared_data

    data = find_shared_data()
    if data is None or not (data / "BSD200").is_dir():
        sys.exit("needs the shared data (BSD200): set METASR_DATA")
    return sorted((data / "BSD200").iterdir())[0]


def _run_once(args: list[str]) -> dict[str, float]:
    """Run one `metasr` process; its wall and CPU time, peak memory and stage split."""
    read, write = os.pipe()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: stdout into the pipe, then exec
        os.dup2(write, 1)
        os.close(read)
        os.execv(
            sys.executable, [sys.executable, "-c", "import sys; from metasr.cli import main; sys.exit(main())", *args]
        )
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"metasr {' '.join(args)} failed:\n{out}")
    stages = {k: float(v) for k, v in _TIMINGS.findall(out)}
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_mib": usage.ru_maxrss / 1024,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        **stages,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--artifacts", help="artifact directory (default: the bundled model's, exported once)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.artifacts:
        artifacts = Path(args.artifacts)
    else:
        from metasr.artifacts import default_artifacts

        artifacts = default_artifacts()
    photo = Image.open(_source_photo()).convert("RGB")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for (w, h), scale in CASES:
            src = Path(tmp) / f"in_{w}x{h}.png"
            photo.resize((w, h), Image.BICUBIC).save(src)
            cmd = ["upscale", str(src), "-o", str(Path(tmp) / "out.png"), "--scale", str(scale)]
            cmd += ["--artifacts", str(artifacts), "--timings"]
            runs = [_run_once(cmd) for _ in range(args.repeats)]
            median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            median["peak_mib"] = max(r["peak_mib"] for r in runs)
            out_px = int(scale * w) * int(scale * h)
            rows.append({"input": f"{w}x{h}", "scale": scale, "out_mpx": out_px / 1e6, **median, "runs": runs})
    print(f"metasr upscale, bundled model, {os.cpu_count()} CPUs; median of {args.repeats} runs; peak = max")
    print("| input | scale | output Mpx | wall s | CPU s | peak MiB | decode | features | upscale | encode | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        stages = " | ".join(f"{r.get(k, float('nan')):.2f}" for k in ("decode", "features", "upscale", "encode"))
        print(
            f"| {r['input']} | x{r['scale']:g} | {r['out_mpx']:.1f} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} "
            f"| {r['peak_mib']:.0f} | {stages} | {r['load_before']:.2f}-{r['load_after']:.2f} |"
        )
    small, big = rows[0], rows[1]
    growth = big["wall_s"] / small["wall_s"]
    print(
        f"1500x1000 x4: {big['wall_s']:.2f} s (target < {TARGETS['wall_s']:g} s), {big['peak_mib']:.0f} MiB "
        f"(target < {TARGETS['peak_mib']} MiB); 4x the input: {growth:.2f}x the time "
        f"({big['out_mpx'] / small['out_mpx']:.1f}x the output pixels; target <= {TARGETS['growth']:g}x); "
        f"load average now {os.getloadavg()}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
