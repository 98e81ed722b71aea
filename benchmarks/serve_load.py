"""A bounded load test of the upscale service on 127.0.0.1: latency, throughput, memory, 1 vs 2 replicas.

Starts an embedded Ray in this process (the cold start is timed: ``ray.init`` + Serve + replicas ready), deploys
the bundled model's service (``--artifacts`` for another) with 1 and then 2 replicas of 1 CPU each, and sends
``--requests`` POSTs per cell at concurrency 1, 2 and 4 for a small and a large image at ``--scale``. Per cell:
p50 / p95 latency (ms), throughput (requests/s), errors (any non-200: must be 0), and the memory of this
process tree (this driver, Ray's GCS, raylet, proxy, controller, replicas: the summed PSS of every descendant,
and the summed RSS, which counts shared pages once per process; sampled after the cell). Ends with the
2-replica / 1-replica throughput ratios. Prints the CPU and whether it has AVX-512 VNNI. Needs the serve
extra; listens on 127.0.0.1 only.

    python benchmarks/serve_load.py [--requests 12] [--scale 2] [--port 8765] [--concurrency 1 2 4]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import os
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from metasr.measure import cpu_summary


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_memory_mib(pid: int | None = None) -> tuple[float, float]:
    """(summed RSS, summed PSS) in MiB of ``pid`` (default: this process) and all its descendants. RSS counts
    each shared page (libraries, Ray's shared-memory object store) once per process that maps it, so its sum
    overstates a tree; PSS splits shared pages between their processes: its sum is the tree's real share."""
    rss = pss = 0
    for p in _descendants(pid or os.getpid()):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def _memory() -> str:
    rss, pss = tree_memory_mib()
    return f"tree PSS {pss:.0f} MiB (RSS sum {rss:.0f})"


def _images() -> dict[str, bytes]:
    from metasr.bundled import find_shared_data

    data = find_shared_data()
    if data is None or not (data / "Set5").is_dir():
        sys.exit("needs the shared data (Set5): set METASR_DATA")
    rgb = np.asarray(Image.open(data / "Set5" / "baby.png").convert("RGB"))  # 512x512
    out = {}
    for name, side in (("small 128x128", 128), ("large 512x512", 512)):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb[:side, :side])).save(buf, "PNG")
        out[name] = buf.getvalue()
    return out


def _post(url: str, body: bytes) -> tuple[int, float]:
    t0 = time.perf_counter()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.perf_counter() - t0


def _cell(url: str, body: bytes, n: int, concurrency: int) -> dict[str, float]:
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: _post(url, body), range(n)))
    wall = time.perf_counter() - t0
    lat = sorted(s * 1000 for _, s in results)
    return {
        "p50": statistics.median(lat),
        "p95": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
        "rps": n / wall,
        "errors": sum(1 for s, _ in results if s != 200),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", help="artifact directory (default: the bundled model)")
    ap.add_argument("--requests", type=int, default=12, help="requests per cell (default 12)")
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    if not 1 <= args.requests <= 1000 or not all(1 <= c <= 64 for c in args.concurrency):
        sys.exit("--requests must be in 1..1000 and --concurrency in 1..64")

    from metasr.runtime.serve_api import ServiceConfig
    from metasr.runtime.serving import DeploymentLimits, ServeOptions, build_app, start_service, stop_service

    from metasr.artifacts import default_artifacts

    print(f"CPU: {cpu_summary()}; load average {os.getloadavg()[0]:.2f}")
    artifacts = Path(args.artifacts) if args.artifacts else default_artifacts(verbose=False)
    images = _images()
    url = f"http://127.0.0.1:{args.port}/v1/upscale?scale={args.scale:g}"
    config = ServiceConfig(str(artifacts.resolve()))
    throughput: dict[tuple[int, str, int], float] = {}
    t0 = time.perf_counter()
    try:
        for replicas in (1, 2):
            limits = DeploymentLimits(replicas=replicas, cpus_per_replica=1.0, max_ongoing_requests=8,
                                      max_queued_requests=1000)  # fmt: skip
            start_service(build_app(config, limits), ServeOptions(port=args.port))
            if replicas == 1:
                print(f"cold start (embedded Ray + Serve + 1 replica ready): {time.perf_counter() - t0:.1f} s; "
                      f"{_memory()}")  # fmt: skip
            for name, body in images.items():
                _post(url, body)  # warm-up
                for c in args.concurrency:
                    r = _cell(url, body, args.requests, c)
                    throughput[(replicas, name, c)] = r["rps"]
                    print(f"replicas {replicas}  {name} x{args.scale:g}  concurrency {c}: p50 {r['p50']:.0f} ms, "
                          f"p95 {r['p95']:.0f} ms, {r['rps']:.2f} req/s, errors {r['errors']}, "
                          f"{_memory()}")  # fmt: skip
    finally:
        stop_service(embedded=True)
    print("throughput ratio, 2 replicas / 1 replica:")
    for name in images:
        ratios = ", ".join(f"c={c}: {throughput[(2, name, c)] / throughput[(1, name, c)]:.2f}x"
                           for c in args.concurrency)  # fmt: skip
        print(f"  {name}: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
