"""``metasr bench``: the paper's Table 2 for this machine, PyTorch eager and ONNX Runtime side by side.

Per backend: feature stage, weight prediction, upscale stage and end-to-end times (median of repeats) on
one LR size and scale; continuous zoom (one encode, then ten scales) against re-running the whole pipeline
per scale and against one full single-scale run; peak resident memory of one end-to-end run at a given
output size, each backend in a fresh process.

Without a model (``model=None``: a torch-free install) only the runtime backend runs, on the given artifacts:
the PyTorch columns are left out. PyTorch is imported only when a model is given.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metasr.fileio import atomic_path
from metasr.limits import MAX_IMAGE_PIXELS, check_int
from metasr.measure import median_time, status_kib

if TYPE_CHECKING:
    from metasr.model import MetaSR

__all__ = ["BACKEND_LABELS", "ZOOM_SCALES", "BenchError", "dump", "format_bench", "run_bench"]


class BenchError(RuntimeError):
    """A measurement that could not run (e.g. the memory run's process failed or ran out of memory)."""


ZOOM_SCALES = (1.3, 1.6, 1.9, 2.2, 2.5, 2.8, 3.1, 3.4, 3.7, 4.0)


BACKEND_LABELS = {"ort": "ONNX Runtime", "ort-cuda": "ONNX Runtime (CUDA)", "trt": "TensorRT", "openvino": "OpenVINO"}


def _peak_child(
    kind: str, target: str, lr_h: int, lr_w: int, scale: float, precision: str = "fp32", backend: str = "ort",
    graph: str = "two",
) -> float:  # fmt: skip
    code = (
        "from metasr.bench import _child_peak; "
        f"print(_child_peak({kind!r}, {target!r}, {lr_h}, {lr_w}, {scale}, {precision!r}, {backend!r}, {graph!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        why = f"killed by signal {-out.returncode}" if out.returncode < 0 else f"exit {out.returncode}"
        last = (out.stderr.strip().splitlines() or [""])[-1][:200]
        hint = " (out of memory? try a smaller --memory-output)" if out.returncode == -9 or "Memory" in last else ""
        raise BenchError(f"the {kind} memory run ({lr_w}x{lr_h} at x{scale:g}) failed, {why}{hint}: {last}")
    return float(out.stdout.strip().splitlines()[-1])


def _child_peak(
    kind: str, target: str, lr_h: int, lr_w: int, scale: float, precision: str = "fp32", backend: str = "ort",
    graph: str = "two",
) -> float:  # fmt: skip
    """In a fresh process: peak resident memory (MiB) of the whole process through one end-to-end run."""
    img = (np.random.default_rng(0).random((lr_h, lr_w, 3)) * 255).astype(np.float32)
    if kind == "ort":
        from metasr.runtime.pipeline import Pipeline

        with Pipeline(target, backend, precision=precision, graph=graph) as p:
            p(img, scale)
    else:
        import torch

        from metasr.checkpoint import load_model

        model = load_model(target)
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None], scale)
    return status_kib("VmHWM") / 1024


def _torch_times(model: MetaSR, img: np.ndarray, scale: float, repeats: int) -> dict:
    """PyTorch eager: the stages' median times on ``img`` (h, w, 3) float32."""
    import torch

    from metasr.upscale import meta_upscale

    h, w = img.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]  # (1, 3, h, w)
    with torch.no_grad():
        plan = model.plan(h, w, scale)
        feats = model.encode(x)
        table = model.P2W.table(plan, feats)
        times = {
            "feature_s": median_time(lambda: model.encode(x), repeats),
            "weights_s": median_time(lambda: model.P2W.table(plan, feats), repeats),
            "upscale_s": median_time(lambda: model.add_mean(meta_upscale(feats, table, plan)), repeats),
            "e2e_s": median_time(lambda: model(x, scale), repeats),
        }
    times["weights_upscale_s"] = times["weights_s"] + times["upscale_s"]
    return times


def _runtime_times(
    art: Path, backend: str, precision: str, img: np.ndarray, scale: float, repeats: int, graph: str = "two"
) -> tuple:
    """The runtime backend's stage times, and the continuous-zoom times, on ``img`` (``graph``: "two" or
    "portable", :class:`~metasr.runtime.pipeline.Pipeline`'s)."""
    from metasr.runtime.pipeline import Pipeline

    with Pipeline(art, backend, precision=precision, graph=graph) as p:
        feats = p.encode(img)
        times = {
            "feature_s": median_time(lambda: p.encode(img), repeats),
            "weights_upscale_s": median_time(lambda: p.upscale(feats, scale), repeats),
            "e2e_s": median_time(lambda: p.upscale(p.encode(img), scale), repeats),
        }

        def zoom_once() -> None:  # one encode, then every zoom scale from the same features
            features = p.encode(img)
            for s in ZOOM_SCALES:
                p.upscale(features, s)

        zoom = median_time(zoom_once, max(1, repeats // 2))
        rerun = median_time(lambda: [p.upscale(p.encode(img), s) for s in ZOOM_SCALES], max(1, repeats // 2))
        times["upscale_body"] = p.upscale_body
    return times, zoom, rerun


def run_bench(
    model: MetaSR | None,
    lr_size: tuple[int, int],
    scale: float,
    repeats: int = 5,
    memory_output: tuple[int, int] | None = (1920, 1080),
    artifacts: str | Path | None = None,
    precision: str = "fp32",
    backend: str = "ort",
    graph: str = "two",
) -> dict:
    """Measure everything listed in the module docstring; returns a JSON-able dict.

    The runtime ``backend`` ("ort", "ort-cuda", "trt", "openvino": its results under the key "ort") runs
    ``artifacts`` (default: a fresh FP32 export of ``model``; TensorRT needs engines built there) at ``precision``.
    ``model=None`` (no PyTorch): the runtime alone, on ``artifacts`` (required); no "torch" results.
    ``graph="portable"``: the runtime runs the portable graphs (docs/portable.md).
    """
    h, w = lr_size
    check_int(repeats, "repeats", 1, 1000)
    for name, (a, b) in (("lr_size", lr_size), ("memory_output", memory_output or (1, 1))):
        if a < 1 or b < 1 or a * b > MAX_IMAGE_PIXELS:
            raise ValueError(f"{name} must be two positive sizes of at most {MAX_IMAGE_PIXELS:,} pixels, got {a}x{b}")
    if model is None and artifacts is None:
        raise ValueError("without a PyTorch model the benchmark needs artifacts to run")
    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.float32)
    res: dict = {"lr": f"{w}x{h}", "scale": scale, "precision": precision, "backend": backend, "graph": graph}
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            from metasr.runtime.manifest import Manifest

            art = Path(artifacts)  # type: ignore[arg-type]
            res["model"] = Manifest.read(art).model.get("name", "")
        else:
            import torch

            from metasr.checkpoint import save_model
            from metasr.export import export_onnx

            art = Path(artifacts) if artifacts else export_onnx(model, Path(tmp) / "art").out_dir
            ckpt = save_model(model, Path(tmp) / "model.safetensors")
            res["model"], res["threads"] = model.config.name, torch.get_num_threads()
            res["torch"] = _torch_times(model, img, scale, repeats)
        res["ort"], zoom, rerun = _runtime_times(art, backend, precision, img, scale, repeats, graph)
        res["zoom"] = {
            "scales": list(ZOOM_SCALES),
            "encode_once_s": zoom,
            "rerun_per_scale_s": rerun,
            "one_full_run_s": res["ort"]["e2e_s"],
            "vs_one_run": zoom / res["ort"]["e2e_s"],
            "vs_rerun": zoom / rerun,
        }
        for b in ("torch", "ort"):
            if b in res:
                res[b]["weights_upscale_pct_of_feature"] = 100 * res[b]["weights_upscale_s"] / res[b]["feature_s"]
        if "torch" in res:
            res["ort_vs_torch_e2e"] = res["ort"]["e2e_s"] / res["torch"]["e2e_s"]
        if memory_output:
            mw, mh = memory_output
            lh, lw = int(np.ceil(mh / scale)), int(np.ceil(mw / scale))
            res["memory"] = {
                "output": f"{int(scale * lw)}x{int(scale * lh)}",
                "lr": f"{lw}x{lh}",
                "ort_peak_mib": _peak_child("ort", str(art), lh, lw, scale, precision, backend, graph),
            }
            if model is not None:
                res["memory"]["torch_peak_mib"] = _peak_child("torch", str(ckpt), lh, lw, scale)
    return res


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f} ms"


def format_bench(res: dict) -> str:
    """Markdown tables of a :func:`run_bench` result."""
    head = [
        "backend",
        "feature stage",
        "weight prediction",
        "upscale stage",
        "weights + upscale",
        "% of feature",
        "end to end",
    ]
    rows = []
    label = BACKEND_LABELS.get(res.get("backend", "ort"), "ONNX Runtime")
    ort_name = label + (f" {res['precision']}" if res.get("precision", "fp32") != "fp32" else "")
    ort_name += " (portable graphs)" if res.get("graph") == "portable" else ""
    for name, key in (("PyTorch eager", "torch"), (ort_name, "ort")):
        if key not in res:  # no PyTorch here: the runtime's columns only
            continue
        r = res[key]
        rows.append(
            [
                name,
                _ms(r["feature_s"]),
                _ms(r.get("weights_s")),
                _ms(r.get("upscale_s")),
                _ms(r["weights_upscale_s"]),
                f"{r['weights_upscale_pct_of_feature']:.2f}%",
                _ms(r["e2e_s"]),
            ]
        )
    z = res["zoom"]
    threads = f"{res['threads']} PyTorch threads" if "threads" in res else "without PyTorch"
    lines = [
        f"**{res['model']}**, LR {res['lr']} at x{res['scale']:g}, {threads} (median times; ONNX "
        "Runtime runs weight prediction inside the upscale graph)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    if "upscale_body" in res.get("ort", {}):
        lines += [f"{label} upscale body: {res['ort']['upscale_body']}", ""]
    if "ort_vs_torch_e2e" in res:
        lines += [f"{label} end to end / PyTorch eager: **{res['ort_vs_torch_e2e']:.2f}x**", ""]
    lines += [
        f"Continuous zoom on {label}, scales {', '.join(f'{s:g}' for s in z['scales'])}: one encode + 10 "
        f"upscales {_ms(z['encode_once_s'])} = **{z['vs_one_run']:.2f}x one full x{res['scale']:g} run** "
        f"({_ms(z['one_full_run_s'])}); re-running the whole pipeline per scale takes {_ms(z['rerun_per_scale_s'])} "
        f"({1 / z['vs_rerun']:.1f}x the zoom).",
    ]
    if "memory" in res:
        m = res["memory"]
        lines += [
            "",
            f"Peak resident memory of a whole process, {m['lr']} -> {m['output']} at x{res['scale']:g}: "
            f"{label} **{m['ort_peak_mib']:.0f} MiB**"
            + (f", PyTorch eager {m['torch_peak_mib']:.0f} MiB." if "torch_peak_mib" in m else "."),
        ]
    return "\n".join(lines)


def dump(res: dict, path: Path) -> None:
    """Write ``res`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(res, indent=2) + "\n")
