"""``metasr bench``: the paper's Table 2 for this machine, PyTorch eager and ONNX Runtime side by side.

Per backend: feature stage, weight prediction, upscale stage and end-to-end times (median of repeats) on
one LR size and scale; continuous zoom (one encode, then ten scales) against re-running the whole pipeline
per scale and against one full single-scale run; peak resident memory of one end-to-end run at a given
output size, each backend in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from metasr.measure import median_time, status_kib
from metasr.model import MetaSR
from metasr.upscale import meta_upscale

__all__ = ["BACKEND_LABELS", "ZOOM_SCALES", "run_bench"]

ZOOM_SCALES = (1.3, 1.6, 1.9, 2.2, 2.5, 2.8, 3.1, 3.4, 3.7, 4.0)


BACKEND_LABELS = {"ort": "ONNX Runtime", "ort-cuda": "ONNX Runtime (CUDA)", "trt": "TensorRT", "openvino": "OpenVINO"}


def _peak_child(
    kind: str, target: str, lr_h: int, lr_w: int, scale: float, precision: str = "fp32", backend: str = "ort"
) -> float:
    code = (
        "import sys, numpy as np; from metasr.bench import _child_peak; "
        f"print(_child_peak({kind!r}, {target!r}, {lr_h}, {lr_w}, {scale}, {precision!r}, {backend!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _child_peak(
    kind: str, target: str, lr_h: int, lr_w: int, scale: float, precision: str = "fp32", backend: str = "ort"
) -> float:
    """In a fresh process: peak resident memory (MiB) of the whole process through one end-to-end run."""
    img = (np.random.default_rng(0).random((lr_h, lr_w, 3)) * 255).astype(np.float32)
    if kind == "ort":
        from metasr.runtime.pipeline import Pipeline

        with Pipeline(target, backend, precision=precision) as p:
            p(img, scale)
    else:
        from metasr.checkpoint import load_model

        model = load_model(target)
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None], scale)
    return status_kib("VmHWM") / 1024


def run_bench(
    model: MetaSR,
    lr_size: tuple[int, int],
    scale: float,
    repeats: int = 5,
    memory_output: tuple[int, int] | None = (1920, 1080),
    artifacts: str | Path | None = None,
    precision: str = "fp32",
    backend: str = "ort",
) -> dict:
    """Measure everything listed in the module docstring; returns a JSON-able dict.

    The runtime ``backend`` ("ort", "ort-cuda", "trt", "openvino": its results under the key "ort") runs
    ``artifacts`` (default: a fresh FP32 export of ``model``; TensorRT needs engines built there) at ``precision``.
    """
    from metasr.checkpoint import save_model
    from metasr.export import export_onnx
    from metasr.runtime.pipeline import Pipeline

    h, w = lr_size
    rng = np.random.default_rng(0)
    img = (rng.random((h, w, 3)) * 255).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]  # (1, 3, h, w)
    res: dict = {"model": model.config.name, "lr": f"{w}x{h}", "scale": scale, "threads": torch.get_num_threads()}
    res["precision"], res["backend"] = precision, backend
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        art = Path(artifacts) if artifacts else export_onnx(model, Path(tmp) / "art").out_dir
        ckpt = save_model(model, Path(tmp) / "model.safetensors")
        plan = model.plan(h, w, scale)
        feats_t = model.encode(x)
        table = model.P2W.table(plan, feats_t)
        res["torch"] = {
            "feature_s": median_time(lambda: model.encode(x), repeats),
            "weights_s": median_time(lambda: model.P2W.table(plan, feats_t), repeats),
            "upscale_s": median_time(lambda: model.add_mean(meta_upscale(feats_t, table, plan)), repeats),
            "e2e_s": median_time(lambda: model(x, scale), repeats),
        }
        res["torch"]["weights_upscale_s"] = res["torch"]["weights_s"] + res["torch"]["upscale_s"]
        with Pipeline(art, backend, precision=precision) as p:
            feats = p.encode(img)
            res["ort"] = {
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
        res["zoom"] = {
            "scales": list(ZOOM_SCALES),
            "encode_once_s": zoom,
            "rerun_per_scale_s": rerun,
            "one_full_run_s": res["ort"]["e2e_s"],
            "vs_one_run": zoom / res["ort"]["e2e_s"],
            "vs_rerun": zoom / rerun,
        }
        for b in ("torch", "ort"):
            r = res[b]
            r["weights_upscale_pct_of_feature"] = 100 * r["weights_upscale_s"] / r["feature_s"]
        res["ort_vs_torch_e2e"] = res["ort"]["e2e_s"] / res["torch"]["e2e_s"]
        if memory_output:
            mw, mh = memory_output
            lh, lw = int(np.ceil(mh / scale)), int(np.ceil(mw / scale))
            res["memory"] = {
                "output": f"{int(scale * lw)}x{int(scale * lh)}",
                "lr": f"{lw}x{lh}",
                "ort_peak_mib": _peak_child("ort", str(art), lh, lw, scale, precision, backend),
                "torch_peak_mib": _peak_child("torch", str(ckpt), lh, lw, scale),
            }
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
    for name, key in (("PyTorch eager", "torch"), (ort_name, "ort")):
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
    lines = [
        f"**{res['model']}**, LR {res['lr']} at x{res['scale']:g}, {res['threads']} threads (median times; ONNX "
        "Runtime runs weight prediction inside the upscale graph)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        f"{label} end to end / PyTorch eager: **{res['ort_vs_torch_e2e']:.2f}x**",
        "",
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
            f"{label} **{m['ort_peak_mib']:.0f} MiB**, PyTorch eager {m['torch_peak_mib']:.0f} MiB.",
        ]
    return "\n".join(lines)


def dump(res: dict, path: Path) -> None:
    path.write_text(json.dumps(res, indent=2))
