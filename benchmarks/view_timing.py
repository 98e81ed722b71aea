"""``metasr view``'s stage timings in the page (onnxruntime-web, wasm) against ONNX Runtime for Python.

Exports the bundled model (with its portable graphs) to a temporary folder, serves it with ``metasr view``'s
server, opens the page in headless Chromium (``--backend wasm``: no GPU there), loads a ``--size`` x ``--size``
crop of Set5 ``baby.png`` and moves the slider to each scale ``--repeats`` times, interleaved with the same
graphs (``feature.onnx`` once, ``upscale.portable.onnx`` per scale, the same bytes) in ONNX Runtime for Python
in this process. The page's times are its own (``performance.now()`` around ``session.run``, as it shows them);
Python's are ``time.perf_counter()`` around ``InferenceSession.run``. Prints medians and the ratio page/Python,
and, with ``--memory``, the page's memory after the largest scale (``performance.measureUserAgentSpecificMemory``,
wasm heap included).

    python benchmarks/view_timing.py [--size 256] [--scales 1.5 2.5 4] [--repeats 5] [--memory] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from metasr.bundled import find_shared_data
from metasr.measure import cpu_summary
from metasr.view import ViewServer, load_site


def _export(out: Path) -> Path:
    from metasr.export import export_onnx
    from metasr.runtime.manifest import sha256_file

    from metasr.bundled import bundled_model_path
    from metasr.checkpoint import load_model

    path = bundled_model_path()
    export_onnx(load_model(path), out, checkpoint_sha256=sha256_file(path))
    return out


def _poll(page, expr: str, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not page.evaluate(expr):
        if time.monotonic() > end:
            raise TimeoutError(expr)
        time.sleep(0.02)


def _page_upscale(page, scale: float) -> float:
    """One slider move to ``scale`` (an input event, as a drag fires); the page's own upscale time (ms)."""
    n = page.evaluate("window.metasrView.state.upscaleRuns")
    features_before = page.evaluate("window.metasrView.state.featureRuns")
    page.evaluate(
        "v => { const s = document.getElementById('scale'); s.value = v; s.dispatchEvent(new Event('input')); }",
        str(scale),
    )
    _poll(page, f"window.metasrView.state.upscaleRuns > {n} && !window.metasrView.state.busy")
    state = page.evaluate("window.metasrView.state")
    assert state["featureRuns"] == features_before and not state["error"], state  # only the upscale stage ran
    return float(state["timings"]["upscale"][-1])


def _longest_frame(page, done: str) -> float:
    """Until ``done`` holds: the longest wait (ms) for an animation frame, i.e. how long the tab froze."""
    worst = 0.0
    while not page.evaluate(done):
        t0 = time.perf_counter()
        page.evaluate("new Promise(r => requestAnimationFrame(() => r(1)))")
        worst = max(worst, 1000 * (time.perf_counter() - t0))
        time.sleep(0.05)
    return worst


def _python_sessions(art: Path):
    import onnxruntime as ort

    feature = ort.InferenceSession((art / "feature.onnx").read_bytes(), providers=["CPUExecutionProvider"])
    upscale = ort.InferenceSession((art / "upscale.portable.onnx").read_bytes(), providers=["CPUExecutionProvider"])
    return feature, upscale


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, choices=range(16, 513), metavar="16..512")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.5, 2.5, 4.0])
    ap.add_argument("--repeats", type=int, default=5, choices=range(1, 101), metavar="1..100")
    ap.add_argument("--memory", action="store_true", help="also the page's memory after the last scale")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    for s in args.scales:
        if not 1.0 < s <= 4.0:
            ap.error(f"scales must be in (1, 4], got {s}")
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("METASR_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        sys.exit("view_timing: error: no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        art = _export(Path(tmp) / "art")
        data = find_shared_data()
        if data is None:
            sys.exit("view_timing: error: no shared data (set METASR_DATA)")
        img = Image.open(data / "Set5" / "baby.png").convert("RGB")
        x0, y0 = (img.width - args.size) // 2, (img.height - args.size) // 2
        crop = img.crop((x0, y0, x0 + args.size, y0 + args.size))
        crop.save(Path(tmp) / "in.png")
        rgb = np.asarray(crop, dtype=np.float32).transpose(2, 0, 1)[None].copy()  # (1, 3, h, w)
        feature, upscale = _python_sessions(art)
        feats = feature.run(None, {"lr": rgb})[0]
        page_ms: dict[float, list[float]] = {s: [] for s in args.scales}
        py_ms: dict[float, list[float]] = {s: [] for s in args.scales}
        with ViewServer(load_site(art), 0).start() as server, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"] if os.geteuid() == 0 else [])
            page = browser.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else r.abort())
            page.goto(server.url + "?backend=wasm")
            _poll(page, "window.metasrView && window.metasrView.state.ready")
            py_features, stall = [], 0.0
            for i in range(args.repeats + 1):  # the feature stage: the image loaded again (the first: warm-up)
                page.set_input_files("#file", [])
                page.set_input_files("#file", str(Path(tmp) / "in.png"))
                stall = max(stall, _longest_frame(page, f"window.metasrView.state.upscaleRuns >= {i + 1}"))
                _poll(page, f"window.metasrView.state.upscaleRuns >= {i + 1} && !window.metasrView.state.busy")
                py_features.append(_ms(lambda: feature.run(None, {"lr": rgb})))
            state = page.evaluate("window.metasrView.state")
            page_feature = statistics.median(state["timings"]["feature"][1:])
            py_feature, threads = statistics.median(py_features[1:]), state["threads"]
            for s in args.scales:  # warm-up: each scale once in both
                _page_upscale(page, s)
                upscale.run(None, {"features": feats, "scale": np.array(s, dtype=np.float64)})
            for _ in range(args.repeats):
                for s in args.scales:
                    page_ms[s].append(_page_upscale(page, s))
                    feed = {"features": feats, "scale": np.array(s, dtype=np.float64)}
                    py_ms[s].append(_ms(lambda feed=feed: upscale.run(None, feed)))
            memory = None
            if args.memory:
                memory = page.evaluate("performance.measureUserAgentSpecificMemory().then(m => m.bytes)")
            browser.close()
    print(f"machine: {cpu_summary()}; page: Chromium wasm, {threads} threads; Python: onnxruntime, default threads")
    print(f"input {args.size}x{args.size}; medians of {args.repeats} (after one warm-up)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes share these cores)")
    print(f"longest wait for an animation frame while the page computed features: {stall:.0f} ms")
    print(f"feature stage: page {page_feature:.0f} ms, Python {py_feature:.0f} ms -> "
          f"{page_feature / py_feature:.2f}x")  # fmt: skip
    rows = []
    print("scale  output      page ms  python ms  page/python")
    for s in args.scales:
        pm, qm = statistics.median(page_ms[s]), statistics.median(py_ms[s])
        out = f"{int(s * args.size)}x{int(s * args.size)}"
        print(f"x{s:<5g} {out:<11} {pm:8.0f}  {qm:9.0f}  {pm / qm:10.2f}x")
        rows.append({"scale": s, "output": out, "page_ms": pm, "python_ms": qm, "ratio": pm / qm,
                     "page_all_ms": page_ms[s], "python_all_ms": py_ms[s]})  # fmt: skip
    if memory is not None:
        print(f"page memory after the runs (measureUserAgentSpecificMemory): {memory / 2**20:.0f} MiB")
    if args.json:
        feature_row = {"page_ms": page_feature, "python_ms": py_feature, "longest_frame_ms": stall}
        Path(args.json).write_text(json.dumps({
            "size": args.size, "threads": threads, "feature": feature_row,
            "upscale": rows, "page_memory_bytes": memory, "machine": cpu_summary()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
