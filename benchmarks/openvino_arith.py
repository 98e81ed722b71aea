"""What OpenVINO's CPU plugin really computes, on tiny probe graphs, and the portable "inv" form's plan on a grid.

    python benchmarks/openvino_arith.py [--probes] [--sizes 300000] [--grid ort|openvino ...] [--seed 0]

``--probes``: float64 inputs and arithmetic, int64, integer Mod / Div above 2**24, float32 Divide against IEEE,
and the projection's float32 Range -> Cast -> Mul -> Floor -> Sub against numpy on 240,000 (n, r) cells.
``--sizes N``: how often the exact-size arithmetic (``runtime.batch.scale_for_size``: float64 division, then
nextafter steps) differs from its integer-only form (the covering axis at its target, the other
``target * n // n_cover``) on N random (h, w, H', W'), and float32(1 / r) from a float32 division: why the inv
form has no size graph (docs/portable.md). ``--grid``: the inv form's plan nodes alone (features (1, 1, n, 1),
``out_size``, ``inv_scale`` in) against :func:`metasr.runtime.feeds.plan_feeds` of
:func:`metasr.runtime.projection.project` plus :func:`~metasr.runtime.feeds.signature_hints`, bit for bit, on
the edge cases, n = 1..200 x r = 1.01..4.00 (0.01 steps) and 100 random r, and 100 random n in 201..2000 x every
seventh of those r (85,811 cells), on each runtime named.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper, numpy_helper

EDGE = [(45, 1.4), (50, 2.3), (13, 2.3), (7, 2.3), (10, 2.7), (27, 3.7), (100, 1.1), (3, 1.1), (2048, 1.01),
        (2048, 1.03), (2048, 1.04), (1500, 3.015984633869078)]  # fmt: skip


def _model(nodes, inputs, outputs, inits=(), opset=17) -> bytes:
    m = helper.make_model(helper.make_graph(nodes, "p", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])  # fmt: skip
    m.ir_version = 8
    return m.SerializeToString()


def _compile(data: bytes):
    import openvino as ov

    core = ov.Core()
    return core.compile_model(core.read_model(data, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _vi(name: str, dtype: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def probes() -> None:
    mk = helper.make_node
    c = _compile(_model([mk("Identity", ["x"], ["y"]), mk("Mul", ["x", "k"], ["z"]), mk("Div", ["one", "x"], ["inv"])],
                        [_vi("x", T.DOUBLE, []), _vi("k", T.DOUBLE, []), _vi("one", T.DOUBLE, [])],
                        [_vi(n, T.DOUBLE, []) for n in ("y", "z", "inv")]))  # fmt: skip
    r = c.create_infer_request().infer({"x": np.array(2.3), "k": np.array(50.0), "one": np.array(1.0)})
    y, z, inv = (float(r[o]) for o in c.outputs)
    print(f"float64: Identity(2.3) = {y!r}; 2.3 * 50 = {z!r} (float64: {2.3 * 50!r}); 1 / 2.3 = {inv!r} "
          f"(float64: {1 / 2.3!r}, float32: {float(np.float32(1) / np.float32(2.3))!r})")  # fmt: skip
    c = _compile(_model([mk("Add", ["a", "b"], ["s"])], [_vi("a", T.INT64, [1]), _vi("b", T.INT64, [1])],
                        [_vi("s", T.INT64, [1])]))  # fmt: skip
    s = c.create_infer_request().infer({"a": np.array([2**40 + 1]), "b": np.array([1])})[c.outputs[0]]
    print(f"int64: (2**40 + 1) + 1 = {int(s[0])} (int64: {2**40 + 2})")
    ints = [_vi("a", T.INT64, [None]), _vi("b", T.INT64, [])]
    c = _compile(_model([mk("Mod", ["a", "b"], ["m"]), mk("Div", ["a", "b"], ["d"])], ints,
                        [_vi(n, T.INT64, None) for n in "md"]))  # fmt: skip
    for hi, step in ((470_000, 1), (25_000_000, 7)):
        a, b = np.arange(0, hi, step, dtype=np.int64), np.array(4523, np.int64)
        r = c.create_infer_request().infer({"a": a, "b": b})
        m, d = (r[o] for o in c.outputs)
        print(f"int64 Mod / Div by 4523 of 0..{hi:,} step {step}: {int((m != a % b).sum()):,} / "
              f"{int((d != a // b).sum()):,} of {a.size:,} differ, none below 2**24: "
              f"{not ((m != a % b) | (d != a // b))[a < 2**24].any()}")  # fmt: skip
    c = _compile(_model([mk("Div", ["a", "b"], ["q"])], [_vi("a", T.FLOAT, [None]), _vi("b", T.FLOAT, [None])],
                        [_vi("q", T.FLOAT, [None])]))  # fmt: skip
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 5000, 10**6).astype(np.float32), rng.integers(1, 20000, 10**6).astype(np.float32)
    q = c.create_infer_request().infer({"a": a, "b": b})[c.outputs[0]]
    print(f"float32 Divide of integers: {int((q != a / b).sum()):,} of {a.size:,} differ from IEEE")
    k = [numpy_helper.from_array(np.array(0, np.int64), "z"), numpy_helper.from_array(np.array(1, np.int64), "o")]
    nodes = [mk("Range", ["z", "n", "o"], ["r"]), mk("Cast", ["r"], ["rf"], to=T.FLOAT),
             mk("Mul", ["rf", "inv"], ["t"]), mk("Floor", ["t"], ["f"]), mk("Sub", ["t", "f"], ["off"])]  # fmt: skip
    c = _compile(_model(nodes, [_vi("n", T.INT64, []), _vi("inv", T.FLOAT, [])],
                        [_vi("t", T.FLOAT, None), _vi("off", T.FLOAT, None)], k))  # fmt: skip
    req, bad, cells = c.create_infer_request(), 0, 0
    ns = list(range(1, 301)) + [int(x) for x in rng.integers(301, 4097, 300)]
    rs = [1 + i / 100 for i in range(1, 301)] + [float(x) for x in rng.uniform(1.0, 4.0, 300)]
    for n_in in ns:
        for scale in rs[::3] if n_in > 300 else rs:
            inv = np.float32(1 / scale)
            out = req.infer({"n": np.array(int(scale * n_in)), "inv": np.array(inv)})
            t = np.arange(int(scale * n_in), dtype=np.float32) * inv
            ok = np.array_equal(out[c.outputs[0]], t) and np.array_equal(out[c.outputs[1]], t - np.floor(t))
            bad, cells = bad + (not ok), cells + 1
    print(f"float32 projection (t = i * inv, t - floor(t)): {bad} of {cells:,} (n, r) cells differ from numpy")


def sizes(n: int, seed: int) -> None:
    from metasr.runtime.batch import scale_for_size

    rng = np.random.default_rng(seed)
    cases = diff_full = diff_inv = 0
    for _ in range(n):
        h, w = (int(x) for x in rng.integers(1, 4001, 2))
        s = rng.uniform(1.0, 4.0)
        th, tw = (max(1, int(v * s * rng.uniform(0.5, 1.0))) for v in (h, w))
        if max(th / h, tw / w) <= 1.0:
            continue
        r = scale_for_size(h, w, tw, th, 8.0)
        full = (int(r * h), int(r * w))
        if tw * h >= th * w:  # the width covers: it lands on its target, the height follows in integers
            naive, inv = (tw * h // w, tw), np.float32(w) / np.float32(tw)
        else:
            naive, inv = (th, th * w // h), np.float32(h) / np.float32(th)
        cases, diff_full, diff_inv = cases + 1, diff_full + (naive != full), diff_inv + (inv != np.float32(1 / r))
    print(f"exact sizes, {cases:,} random (h, w, H', W'): the integer-only output size differs in {diff_full}, "
          f"float32 n / N' from float32(1 / r) in {diff_inv}")  # fmt: skip


def grid(runtime: str, seed: int) -> None:
    from metasr.export.portable_plan import plan_nodes
    from metasr.runtime.feeds import UPSCALE_PLAN_INPUTS, plan_feeds, portable_targets, signature_hints
    from metasr.runtime.projection import MERGE_TOL, project

    names = [n for n in UPSCALE_PLAN_INPUTS if n.startswith("row_")]
    inputs = [_vi("features", T.FLOAT, [1, 1, "h", "w"]), _vi("out_size", T.INT64, [2]), _vi("inv_scale", T.FLOAT, [1])]
    data = _model(plan_nodes("inv", MERGE_TOL), inputs, [onnx.ValueInfoProto(name=n) for n in names])
    if runtime == "openvino":
        c = _compile(data)
        req = c.create_infer_request()

        def run(feeds):
            out = req.infer(feeds)
            return {n: out[c.output(n)] for n in names}
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])

        def run(feeds):
            return dict(zip(names, sess.run(names, feeds), strict=True))

    rng = np.random.default_rng(seed)
    hs = list(range(1, 201)) + [int(x) for x in rng.integers(201, 2001, 100)]
    rs = [1 + k / 100 for k in range(1, 301)] + [float(x) for x in rng.uniform(1.0, 4.0, 100)]
    cells = EDGE + [(h, r) for h in hs for r in (rs if h <= 200 else rs[::7])]
    bad, t0 = [], time.perf_counter()
    for n, scale in cells:
        got = run({"features": np.zeros((1, 1, n, 1), np.float32), **portable_targets("inv", n, 1, scale)})
        ref = plan_feeds(project(n, 1, scale))
        ok = all(got[k].dtype == ref[k].dtype and np.array_equal(got[k], ref[k]) for k in names[:3])
        hints = signature_hints(ref["row_src"], ref["row_idx"])
        ok = ok and all(np.array_equal(got[k], a) for k, a in zip(names[3:], hints, strict=True))
        if not ok:
            bad.append((n, scale))
    print(f"{runtime}: inv-form plan on {len(cells):,} (n, r) cells: {len(bad)} differ {bad[:5]} "
          f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", action="store_true")
    ap.add_argument("--sizes", type=int, default=0)
    ap.add_argument("--grid", nargs="*", default=[], choices=["ort", "openvino"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.sizes < 0:
        ap.error("--sizes must be >= 0")
    if args.probes:
        probes()
    if args.sizes:
        sizes(args.sizes, args.seed)
    for runtime in args.grid:
        grid(runtime, args.seed)


if __name__ == "__main__":
    main()
