"""``metasr parity``, ``calibrate`` and ``bench``: accuracy against PyTorch, FP16/INT8 graphs, speed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metasr.cli.common import SCALE, CLIError, float_range, int_range, pair, resolve_model
from metasr.interrupts import reraise_interrupt
from metasr.limits import MAX_BUDGET_DB, MAX_CROPS, MAX_HELD_APART, MAX_KEPT, MAX_SEED, REFERENCE_PSNR_RANGE

__all__ = ["register"]

MAX_REPEATS = 1000
MAX_MEMORY_OUTPUT = 100_000_000  # pixels: `metasr upscale`'s default --max-pixels


def _check_outputs(*paths: tuple[str | None, str]) -> None:
    """Every output file a command will write, checked before the run (issue 21): (path, option) pairs."""
    from metasr.fileio import check_output_path

    for path, flag in paths:
        if path is not None:
            check_output_path(path, flag)


def cmd_parity(args: argparse.Namespace) -> int:
    outputs = ((args.report, "--report"), (args.save_inputs, "--save-inputs"), (args.save_outputs, "--save-outputs"))
    _check_outputs(*outputs)  # before importing PyTorch (seconds)
    from metasr.parity import ParityError, run_parity
    from metasr.parity_report import save_polygraphy, to_json, to_markdown

    keep = bool(args.save_inputs or args.save_outputs)
    run = run_parity(
        args.artifacts,
        args.images,
        args.scales,
        model=args.model,
        backends=args.backends,
        precisions=args.precisions,
        overrides=args.threshold,
        given_lr=args.lr_given,
        keep_polygraphy=keep,
        graph=args.graph,
    )
    if not run.cases:
        reasons = "; ".join(f"{b}/{p}: {r}" for b, p, r in run.skipped)
        raise ParityError(f"no backend x precision could run here ({reasons})")
    print(to_markdown(run), end="")
    if args.report:
        from metasr.fileio import atomic_path

        with atomic_path(Path(args.report)) as tmp:
            tmp.write_text(to_json(run) + "\n")
        print(f"report: {args.report}")
    for path in save_polygraphy(run, args.save_inputs, args.save_outputs) if keep else []:
        print(f"polygraphy: {path}")
    return 0 if run.passed else 1


def cmd_calibrate(args: argparse.Namespace) -> int:
    from metasr.calibration.calibrate import CalibrationConfig, calibrate, image_dirs_arg

    config = CalibrationConfig(
        image_dirs=image_dirs_arg(args.images),
        precision=args.precision,
        method=args.method,
        percentile=args.percentile,
        budget_db=args.budget_db,
        reference_psnr_db=args.reference_psnr_db,
        crops=args.crops,
        held_apart=args.held_apart,
        seed=args.seed,
        max_kept=args.max_kept,
        allow_evaluation_images=args.allow_eval_images,
    )
    result = calibrate(Path(args.artifacts), config, progress=True)
    for target, form in result.report["forms"].items():
        kept = ", ".join(k["name"] for k in form["kept"]) or "none"
        final = form["final"]
        print(
            f"{form['file']} ({target}): worst-bin loss {final['loss_db']:.3f} dB (budget {config.budget_db:g} dB "
            f"for an image reconstructed at {args.reference_psnr_db:g} dB), "
            f"{final['psnr_vs_fp32']:.1f} dB vs FP32 output; kept in float: {kept}"
            + (f"; {form['int8_kernels']} INT8 convolutions" if "int8_kernels" in form else "")
        )
    print(f"report: {result.report_md}")
    if not result.met:
        print(f"metasr: budget not met; {args.artifacts} unchanged (see {result.report_md})", file=sys.stderr)
        return 1
    return 0


def _torch_installed() -> bool:
    """Whether PyTorch imports here (bench's PyTorch columns and fresh exports need it)."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        reraise_interrupt(e)
        return False
    return True


def cmd_bench(args: argparse.Namespace) -> int:
    _check_outputs((args.json, "--json"))  # before importing PyTorch (seconds)
    from metasr.bench import dump, format_bench, run_bench
    from metasr.fileio import check_output_file
    from metasr.runtime.backends import ALL_BACKENDS, backend_available
    from metasr.runtime.projection import check_scale

    json_path = check_output_file(args.json, "--json") if args.json else None  # before any work
    if args.precision != "fp32" and not args.artifacts:
        raise CLIError(f"--precision {args.precision} needs --artifacts DIR holding {args.precision} graphs")
    if args.backend == "trt" and not args.artifacts:
        raise CLIError("--backend trt needs --artifacts DIR holding engines (metasr build-engine)")
    if args.backend not in ALL_BACKENDS:
        raise CLIError(f"unknown --backend {args.backend!r}; known: {list(ALL_BACKENDS)}")
    reason = backend_available(args.backend)
    if reason:
        raise CLIError(reason)
    if _torch_installed():
        model = resolve_model(args.model, allow_preset=True)
        check_scale(args.scale, model.config.max_scale)
    else:
        from metasr.runtime.manifest import Manifest

        if args.model or not args.artifacts:
            raise CLIError(
                f"{'--model' if args.model else 'bench without --artifacts'} needs PyTorch, which is not installed "
                "(pip install 'metasr[model]'); --artifacts DIR runs the runtime alone"
            )
        model = None
        check_scale(args.scale, Manifest.read(Path(args.artifacts)).scale_max)
        print("metasr: note: PyTorch is not installed: the runtime's columns only", file=sys.stderr)
    res = run_bench(
        model,
        args.lr_size,
        args.scale,
        repeats=args.repeats,
        memory_output=None if args.no_memory else args.memory_output,
        artifacts=args.artifacts,
        precision=args.precision,
        backend=args.backend,
        graph=args.graph,
    )
    print(format_bench(res))
    if json_path:
        dump(res, json_path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "parity",
        help="every available backend x precision against PyTorch and ground truth (exit 0 pass, 1 fail, 2 usage)",
    )
    p.add_argument("--artifacts", required=True, help="artifact directory (manifest.json + graphs)")
    p.add_argument("--images", action="append", required=True, metavar="DIR", help="HR image folder (repeatable)")
    p.add_argument("--lr-given", action="store_true", help="the images are LR inputs (no ground truth)")
    p.add_argument("--model", help="reference checkpoint (default: the one the manifest records, e.g. bundled)")
    p.add_argument("--scales", type=SCALE, nargs="+", default=[1.5, 2.0, 2.5, 3.0, 4.0])
    p.add_argument("--backends", nargs="+", help="default: all known; unavailable ones are skipped with the reason")
    p.add_argument("--precisions", nargs="+", help="default: every precision the artifacts hold")
    p.add_argument(
        "--graph", choices=["two", "portable"], default="two", help="the two graphs or the portable ones (portable.md)"
    )
    p.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="PREC.LIMIT=V",
        help="override a limit, e.g. fp32.atol=0.02, fp16.min_psnr_db=45, int8.max_gt_loss_db=0.3 (none: off)",
    )
    p.add_argument("--report", help="also write every case as JSON here")
    p.add_argument("--save-inputs", metavar="FILE.json", help="reference feeds per graph, Polygraphy JSON")
    p.add_argument("--save-outputs", metavar="FILE.json", help="PyTorch outputs per graph, Polygraphy RunResults")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("calibrate", help="add FP16 or INT8 graphs to an artifact directory, accuracy-gated")
    p.add_argument("--artifacts", required=True, help="artifact directory (from export-onnx); updated atomically")
    p.add_argument("--images", action="append", required=True, help="training image folder (repeatable)")
    p.add_argument("--precision", choices=["fp16", "int8"], required=True)
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="percentile")
    p.add_argument(
        "--percentile", type=float_range(50.0, 100.0, low_open=True), default=99.999, help="for --method percentile"
    )
    p.add_argument(
        "--budget-db",
        type=float_range(0.0, MAX_BUDGET_DB),
        help="max Y-PSNR loss vs FP32 in the worst scale bin, for an image reconstructed at --reference-psnr-db "
        "(default: the targets, 0.1 for int8, 0.01 for fp16)",
    )
    p.add_argument(
        "--reference-psnr-db",
        type=float_range(*REFERENCE_PSNR_RANGE),
        default=40.0,
        help="FP32 Y-PSNR of the sharpest images the budget protects (default 40: Set5 at x1.5 is 39.5)",
    )
    p.add_argument("--crops", type=int_range(1, MAX_CROPS), default=128, help="calibration crops")
    p.add_argument("--held-apart", type=int_range(1, MAX_HELD_APART), default=24, help="crops from held-apart images")
    p.add_argument("--seed", type=int_range(0, MAX_SEED), default=0)
    p.add_argument(
        "--max-kept", type=int_range(0, MAX_KEPT), default=8, help="most tensors the sensitivity pass keeps in float"
    )
    p.add_argument("--allow-eval-images", action="store_true", help="allow Set5/Set14/... as calibration images")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("bench", help="the paper's Table 2 here: stage times, zoom, memory; PyTorch vs ONNX Runtime")
    p.add_argument("--model", help="checkpoint or preset (random weights are fine for timing); default: bundled")
    p.add_argument(
        "--lr-size",
        type=pair("--lr-size", "80x120 (HxW)"),
        default=(80, 120),
        metavar="HxW",
        help="LR size (default: B100 at x4)",
    )
    p.add_argument("--scale", type=SCALE, default=4.0)
    p.add_argument("--repeats", type=int_range(1, MAX_REPEATS), default=5)
    p.add_argument(
        "--memory-output",
        type=pair("--memory-output", "1920x1080 (WxH)", max_pixels=MAX_MEMORY_OUTPUT),
        default=(1920, 1080),
        metavar="WxH",
        help="output size of the memory run",
    )
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--artifacts", help="run ONNX Runtime on this artifact directory instead of a fresh export")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="graphs / engines to run")
    p.add_argument("--backend", default="ort", help="runtime backend beside PyTorch: ort, ort-cuda, trt or openvino")
    p.add_argument("--graph", choices=["two", "portable"], default="two", help="the runtime's graphs (portable.md)")
    p.set_defaults(func=cmd_bench)
