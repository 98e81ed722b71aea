"""The upscale stage on ONNX Runtime CPU against its compute floor, before and after, interleaved in one run.

Inputs: the bundled model's features of held-out crops (Set14 barbara, 256x256 and 320x480, h x w), computed
once with the feature graph. Per scale, these run in interleaved repeats on ONNX Runtime's CPU provider
(``--threads``, default 2): the upscale graph of ``--before DIR`` (artifacts exported from main, with main's own
host-side feeds, read from git: ``--before-feeds-ref``); the upscale stage of ``--after DIR`` (default: the
bundled model exported by this checkout) with this checkout's feeds, as the runtime runs it ("after": the ort
backend's ``infer``, its filter table recomputed in every call, so each call is a first call at its scale: the
weight predictor's session, then the NCHWc variant of the body (``metasr.runtime.ort_cpu``) or, on the
convolution path, its direct graph (``metasr.runtime.ort_direct``); ``METASR_ORT_NCHWC=0`` /
``METASR_ORT_DIRECT=0`` turn them off; the features writable, so reordered in every call); "zoom": the same call on
read-only features, as ``Pipeline.encode`` returns them, whose NCHWc copy the runtime keeps across a zoom's calls
(``metasr.runtime.blocked_features``; each call still computes its table); "after without native": "after" with
``METASR_NATIVE=0`` (the graphs' interleave and numpy's filter packing in place of ``metasr.runtime._native``'s;
where it is built); the same graph loaded whole, predictor included ("one graph", what "after" was before the
direct path); and ONNX Runtime's own 3x3 convolution 32 -> 32 channels on the same
feature map with constant weights, like the feature graph's (the rate the floor uses). On the convolution path
also the body's convolution alone (ONNX Runtime's ``Conv`` with this plan's computed filters: the least a graph
built on that op pays) and the NCHWc variant's (``ort_cpu.branch_model``: reorders, filter packing, kernels).
Medians of the repeats (``--clock cpu``: minima of the process's CPU time, for a shared machine); each repeat
starts the round one call later, so that every call follows every other (what ran before leaves the caches its
way: a fixed order favoured the call after another one on the same features).

Path: "conv" (one convolution), "phase" (the CPU variant's q^2 strided convolutions, r = p/q; labelled so where
the output is not bit-identical to the exported body's), "grouped" (batched matrix products).

floor = 1728 FLOP per output pixel (2 * C * 9 * 3, C = 32) at that convolution's rate; ratio = stage time /
(output pixels x floor). The stage is the whole upscale graph: weight prediction, MetaUpscale, add_mean. The
share is the stage's part of end to end (feature graph + upscale graph) on that input.

    python benchmarks/upscale_floor.py --before /tmp/main-art [--after DIR] [--repeats 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
from metasr.runtime import native
from metasr.runtime.blocked_features import freeze
from metasr.runtime.feeds import conv_path, plan_feeds
from metasr.runtime.ort_cpu import branch_feeds, branch_model, nchwc_block, specialize
from metasr.runtime.projection import project
from onnx import TensorProto, helper, numpy_helper

SCALES = (1.5, 2.0, 2.5, 3.0, 3.3, 4.0)
SIZES = ((256, 256), (320, 480))
CROP = ("Set14", "barbara.png", (40, 60))  # held out: the bundled model trained on T91 + BSD200


def _session(model: bytes | str, threads: int, spin: bool = True) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not spin:  # idle pool threads sleep instead of spinning, so process CPU time counts work only
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _conv_floor_graph(c: int, h: int, w: int) -> bytes:
    weight = np.random.default_rng(1).standard_normal((c, c, 3, 3)).astype(np.float32) * 0.05
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, w])
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "floor", [x], [y], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def _body_conv_graph() -> list[bytes]:
    """The convolution the body's convolution path runs, alone: features (1, C, h, w) with computed (graph-input)
    filters (3*K_r*K_c, C, T, T); one-pixel blocks 3 x 3 with one pixel of padding, 2-pixel blocks 4 x 4 at
    stride 2 (the same products as the body's space-to-depth form). What any graph built on ONNX Runtime's
    ``Conv`` pays at least on that path."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    wt = helper.make_tensor_value_info("w", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    n1 = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    n2 = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 2, 2], strides=[2, 2])
    out = []
    for node in (n1, n2):
        model = helper.make_model(helper.make_graph([node], "body_conv", [x, wt], [y]),
                                  opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
        model.ir_version = 9
        out.append(model.SerializeToString())
    return out


def _before_feeds(ref: str) -> types.ModuleType:
    """main's ``runtime/feeds.py`` (numpy only; its projection is this checkout's, unchanged) as a module."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{ref}:runtime/feeds.py"], check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    module = types.ModuleType("before_feeds")
    exec(compile(source, f"{ref}:runtime/feeds.py", "exec"), module.__dict__)
    return module


def _features(after: Path, threads: int) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    from PIL import Image

    data = Path(os.environ.get("METASR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    folder, name, (y0, x0) = CROP
    img = np.asarray(Image.open(data / folder / name).convert("RGB"), dtype=np.float32)
    feature = _session(str(after / "feature.onnx"), threads)
    out = {}
    for h, w in SIZES:
        lr = np.ascontiguousarray(img[y0 : y0 + h, x0 : x0 + w].transpose(2, 0, 1))[None]
        out[(h, w)] = lr, feature.run(None, {"lr": lr})[0]
    return out


def _path(on_conv: bool, after: np.ndarray, before: np.ndarray) -> str:
    """The body's path this call took in the "after" graph: the convolution path (from the hints); else the
    variant's phase path where its output is not bit-identical to the exported body's (which runs the grouped path
    there; the phase path sums in another order), else the grouped path."""
    if on_conv:
        return "conv"
    return "phase" if not np.array_equal(after, before) else "grouped"


def _cpu() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown CPU")
    vnni = any("avx512_vnni" in ln for ln in lines if ln.startswith("flags"))
    return f"{model}, {os.cpu_count()} cores, {'with' if vnni else 'without'} AVX-512 VNNI"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="artifacts exported from main (metasr export-onnx)")
    ap.add_argument("--before-feeds-ref", default="main", help="git ref whose runtime/feeds.py feeds --before")
    ap.add_argument("--after", type=Path, help="artifacts of this checkout (default: export the bundled model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: medians of elapsed time; cpu: minima of this process's CPU time with ONNX Runtime's "
                    "threads not spinning (robust to other load on a shared machine)")  # fmt: skip
    ap.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        after = args.after
        if after is None:
            from metasr.export import export_onnx

            from metasr.bundled import bundled_model_path
            from metasr.checkpoint import load_model

            after = Path(tmp) / "after"
            export_onnx(load_model(bundled_model_path()), after, verify=False)
        run(args, after)


def run(args: argparse.Namespace, after: Path) -> None:
    old_feeds = _before_feeds(args.before_feeds_ref)
    th, spin = args.threads, args.clock == "wall"
    before_up = _session(str(args.before / "upscale.onnx"), th, spin)
    after_bytes, _ = specialize((after / "upscale.onnx").read_bytes(), "fp32")  # the graph whole, specialized
    after_up = _session(after_bytes, th, spin)
    from metasr.runtime.pipeline import Pipeline

    runtime = Pipeline(after, threads=th)._upscale  # the ort backend, as `metasr upscale` runs the stage

    def first_call(feeds: dict[str, np.ndarray]) -> np.ndarray:
        if runtime.filters is not None:
            runtime.filters.clear()  # every call computes its table, as the first call at a scale does
        return runtime.infer(feeds)["sr"]

    def without_native(feeds: dict[str, np.ndarray]) -> np.ndarray:  # the graphs' interleave, numpy's packing
        os.environ[native.ENV] = "0"
        try:
            return first_call(feeds)
        finally:
            os.environ[native.ENV] = "1"

    feature = _session(str(after / "feature.onnx"), th, spin)
    inputs = _features(after, th)
    frozen = {hw: freeze(feats.copy()) for hw, (_, feats) in inputs.items()}  # as Pipeline.encode returns them
    clock, pick = (time.perf_counter, np.median) if spin else (time.process_time, np.min)
    load = os.getloadavg()
    what = "median wall time" if spin else "minimum process CPU time (no spinning)"
    print(f"{_cpu()}; ONNX Runtime {ort.__version__}, {th} threads, {what}; load average before {load[0]:.1f}")
    direct = "direct convolution path on" if getattr(runtime, "direct", None) is not None else "no direct path"
    print(f"after: {runtime.body}; {runtime.filters_note}; {direct}")
    body_conv = [_session(g, th, spin) for g in _body_conv_graph()]
    block = nchwc_block()
    nchwc: dict[int, ort.InferenceSession] = {}  # the variant's convolution alone, per slot count
    rng = np.random.default_rng(2)
    rows = []
    for (h, w), (lr, feats) in inputs.items():
        c = feats.shape[1]
        floor_sess = _session(_conv_floor_graph(c, h, w), th, spin)
        for scale in args.scales:
            plan = project(h, w, scale)
            new = {"features": feats, **plan_feeds(plan)}
            old_plan = old_feeds.plan_feeds(plan)
            old = {
                "features": feats,
                **{k: v for k, v in old_plan.items() if k in {i.name for i in before_up.get_inputs()}},
            }
            zoom = new | {"features": frozen[(h, w)]}  # a zoom's call: its features' NCHWc copy kept
            calls = {
                "before": lambda old=old: before_up.run(None, old)[0],
                "after": lambda new=new: first_call(new),
                "zoom": lambda zoom=zoom: first_call(zoom),
                "graph": lambda new=new: after_up.run(None, new)[0],
                "conv": lambda feats=feats, s=floor_sess: s.run(None, {"x": feats})[0],
                "feature": lambda lr=lr: feature.run(None, {"lr": lr})[0],
            }
            on_conv = conv_path(new)
            if on_conv:  # the body's convolution alone, with this plan's shapes
                s_blk, kk = new["row_groups"].shape[2], new["row_slots"].shape[1] * new["col_slots"].shape[1]
                t = 3 if s_blk == 1 else 4
                wts = (rng.standard_normal((3 * kk, c, t, t)) * 0.02).astype(np.float32)
                sess = body_conv[0 if s_blk == 1 else 1]
                calls["body_conv"] = lambda feats=feats, wts=wts, sess=sess: sess.run(None, {"x": feats, "w": wts})[0]
                k = new["row_slots"].shape[1]
                if isinstance(block, int) and k == new["col_slots"].shape[1] and 2 <= k <= 8:
                    if k not in nchwc:
                        nchwc[k] = _session(branch_model(k, block), th, spin)
                    bf = branch_feeds(feats, wts, block)
                    calls["nchwc_conv"] = lambda bf=bf, sess=nchwc[k]: sess.run(None, bf)[0]
            if native.available():
                calls["no_native"] = lambda new=new: without_native(new)
            outs = {k: f() for k, f in calls.items()}  # warm-up (and the outputs compared below)
            graph_diff = float(np.abs(outs["after"] - outs["graph"]).max())
            for k in ("zoom", "no_native"):
                if k in outs and not np.array_equal(outs[k], outs["after"]):
                    raise SystemExit(f"{k} differs from after at x{scale:g} on {h}x{w}")
            outs.pop("body_conv", None)
            outs.pop("nchwc_conv", None)
            times: dict[str, list[float]] = {k: [] for k in calls}
            order = list(calls)
            for i in range(args.repeats):  # each repeat starts one call later: every call follows every other
                for k in order[i % len(order) :] + order[: i % len(order)]:
                    t0 = clock()
                    calls[k]()
                    times[k].append(clock() - t0)
            med = {k: float(pick(v)) for k, v in times.items()}
            n_out = plan.out_size[0] * plan.out_size[1]
            rate = 2 * 9 * c * c * h * w / med["conv"]
            floor_s = n_out * 2 * c * 9 * 3 / rate
            rows.append(
                dict(
                    size=f"{h}x{w}",
                    scale=scale,
                    out=f"{plan.out_size[0]}x{plan.out_size[1]}",
                    path=_path(on_conv, outs["after"], outs["before"]),
                    conv_gflops=rate / 1e9,
                    floor_ms=floor_s * 1e3,
                    before_ms=med["before"] * 1e3,
                    after_ms=med["after"] * 1e3,
                    before_x_floor=med["before"] / floor_s,
                    after_x_floor=med["after"] / floor_s,
                    zoom_x_floor=med["zoom"] / floor_s,
                    no_native_x_floor=med["no_native"] / floor_s if "no_native" in med else None,
                    graph_ms=med["graph"] * 1e3,
                    graph_x_floor=med["graph"] / floor_s,
                    graph_diff=graph_diff,
                    body_conv_x_floor=med["body_conv"] / floor_s if on_conv else None,
                    nchwc_conv_x_floor=med["nchwc_conv"] / floor_s if "nchwc_conv" in med else None,
                    speedup=med["before"] / med["after"],
                    feature_ms=med["feature"] * 1e3,
                    before_share=med["before"] / (med["before"] + med["feature"]),
                    after_share=med["after"] / (med["after"] + med["feature"]),
                    max_abs_diff=float(np.abs(outs["after"] - outs["before"]).max()),
                )
            )
            r = rows[-1]
            print(f"  {r['size']} x{scale:g}: before {r['before_ms']:.1f} ms, after {r['after_ms']:.1f} ms", flush=True)
    head = ("input h x w", "scale", "output", "path", "conv GFLOP/s", "floor ms", "before ms", "after ms",
            "before / floor", "after / floor", "zoom / floor", "after without native / floor", "one graph / floor",
            "after vs one graph max |diff|",
            "body conv alone / floor", "NCHWc conv alone / floor",
            "speed-up", "feature ms", "share before",
            "share after",
            "max |diff|")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(
            f"| {r['size']} | x{r['scale']:g} | {r['out']} | {r['path']} | {r['conv_gflops']:.0f} | "
            f"{r['floor_ms']:.2f} | "
            f"{r['before_ms']:.1f} | {r['after_ms']:.1f} | {r['before_x_floor']:.1f}x | {r['after_x_floor']:.2f}x | "
            f"{r['zoom_x_floor']:.2f}x | "
            f"{'-' if r['no_native_x_floor'] is None else format(r['no_native_x_floor'], '.2f') + 'x'} | "
            f"{r['graph_x_floor']:.2f}x | {r['graph_diff']:.1e} | "
            f"{'-' if r['body_conv_x_floor'] is None else format(r['body_conv_x_floor'], '.1f') + 'x'} | "
            f"{'-' if r['nchwc_conv_x_floor'] is None else format(r['nchwc_conv_x_floor'], '.1f') + 'x'} | "
            f"{r['speedup']:.1f}x | {r['feature_ms']:.1f} | {100 * r['before_share']:.0f}% | "
            f"{100 * r['after_share']:.0f}% | {r['max_abs_diff']:.1e} |"
        )
    load = os.getloadavg()
    print(f"load average after {load[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": _cpu(), "threads": th, "clock": args.clock, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
