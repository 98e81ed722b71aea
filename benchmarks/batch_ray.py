"""BSD200 at x2 through `metasr upscale --engine ray` against the local engine, in the same run.

Three runs of the real command line, each a fresh process writing into its own empty folder: the local engine
(``--engine local``), the Ray engine (embedded Ray, ``--workers`` actors of 1 CPU), and the Ray engine again
with one actor killed (SIGKILL) once ``--kill-after`` outputs exist. Per run: wall time, throughput
(images/s), peak memory of the whole process tree (the command, and for Ray its GCS, raylet, workers: the summed PSS
of every descendant, and the summed RSS, which counts shared pages once per process; sampled every 0.2 s, so a
short peak between samples can be missed), and whether
every output is present and byte-identical to the local engine's (no temporary left). Ends with the
ratios against the local engine. Prints the CPU and whether it has AVX-512 VNNI. ``--limit N`` runs the first
N images of BSD200 (the full set at x2 takes minutes on a small machine).

    python benchmarks/batch_ray.py [--limit 200] [--workers 2] [--scale 2] [--kill-after 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve_load import _descendants, tree_memory_mib

from metasr.measure import cpu_summary


def _actor_pids(root: int) -> list[int]:
    pids = []
    for p in _descendants(root):
        try:
            title = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::MapWorker"):
            pids.append(p)
    return pids


def _run(cmd: list[str], out: Path, kill_after: int | None) -> dict[str, object]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak, peak_rss, killed = 0.0, 0.0, None
    while proc.poll() is None:
        rss, pss = tree_memory_mib(proc.pid)
        peak, peak_rss = max(peak, pss), max(peak_rss, rss)
        if kill_after is not None and killed is None and len(list(out.glob("*.png"))) >= kill_after:
            actors = _actor_pids(proc.pid)
            if actors:
                killed = actors[0]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        sys.exit(f"{cmd[3:]} failed ({proc.returncode}): {err[-1500:]}")
    return {"wall": wall, "peak": peak, "peak_rss": peak_rss, "killed": killed}


def _identical(a: Path, b: Path) -> str:
    names_a, names_b = sorted(p.name for p in a.iterdir()), sorted(p.name for p in b.iterdir())
    if names_a != names_b:
        return f"NO: {len(names_a)} vs {len(names_b)} files"
    same = sum((a / n).read_bytes() == (b / n).read_bytes() for n in names_a)
    return f"{'yes' if same == len(names_a) else 'NO'}: {same}/{len(names_a)} byte-identical, nothing else there"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200, help="first N images of BSD200 (default 200: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--kill-after", type=int, default=5, help="kill one actor once this many outputs exist")
    ap.add_argument("--artifacts", help="artifact directory (default: the bundled model)")
    args = ap.parse_args()
    if not (1 <= args.limit <= 200 and 1 <= args.workers <= 64 and 1 <= args.kill_after <= args.limit):
        sys.exit("--limit in 1..200, --workers in 1..64, --kill-after in 1..limit")

    from metasr.artifacts import default_artifacts
    from metasr.bundled import find_shared_data

    data = find_shared_data()
    if data is None or not (data / "BSD200").is_dir():
        sys.exit("needs the shared data (BSD200): set METASR_DATA")
    artifacts = str(Path(args.artifacts) if args.artifacts else default_artifacts(verbose=False))
    print(f"CPU: {cpu_summary()}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="metasr-batch-") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for p in sorted((data / "BSD200").iterdir())[: args.limit]:
            shutil.copy(p, inputs / p.name)
        n = len(list(inputs.iterdir()))
        base = [sys.executable, "-m", "metasr.cli", "upscale", str(inputs), "--scale", f"{args.scale:g}",
                "--artifacts", artifacts]  # fmt: skip
        ray = ["--engine", "ray", "--workers", str(args.workers)]
        runs = {
            "local": ([*base, "-o", f"{tmp}/local/"], None),
            f"ray, {args.workers} workers": ([*base, "-o", f"{tmp}/ray/", *ray], None),
            f"ray, {args.workers} workers, 1 actor killed": ([*base, "-o", f"{tmp}/killed/", *ray], args.kill_after),
        }
        results = {}
        for (name, (cmd, kill)), folder in zip(runs.items(), ("local", "ray", "killed"), strict=True):
            r = _run(cmd, Path(tmp) / folder, kill)
            results[name] = r
            same = "reference" if folder == "local" else _identical(Path(tmp) / folder, Path(tmp) / "local")
            extra = f", killed actor pid {r['killed']}" if kill else ""
            print(f"{name}: {n} images x{args.scale:g} in {r['wall']:.1f} s = {n / r['wall']:.2f} images/s, "
                  f"peak tree PSS {r['peak']:.0f} MiB (RSS sum {r['peak_rss']:.0f}){extra}; "
                  f"outputs {same}")  # fmt: skip
        local = results["local"]
        for name, r in list(results.items())[1:]:
            print(f"{name} / local: throughput {local['wall'] / r['wall']:.2f}x, peak memory "
                  f"{r['peak'] / local['peak']:.2f}x (PSS)")  # fmt: skip
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
