"""The ``metasr`` command: thin wrappers over the library. Bad input exits 2 with a one-line error."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` (temporary files, directories) runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _expected_errors() -> tuple[type[BaseException], ...]:
    """User-facing error types, importing only what is installed (the runtime commands work without torch)."""
    from PIL import UnidentifiedImageError

    from metasr.runtime.backends import BackendError
    from metasr.runtime.engine_profile import ProfileError
    from metasr.runtime.engines import EngineMismatchError
    from metasr.runtime.manifest import ManifestError
    from metasr.runtime.projection import UnsupportedScaleError
    from metasr.runtime.trt_env import TensorRTUnavailable

    errors: tuple[type[BaseException], ...] = (
        CLIError,
        UnsupportedScaleError,
        ManifestError,
        BackendError,
        TensorRTUnavailable,
        EngineMismatchError,
        ProfileError,
        FileNotFoundError,
        UnidentifiedImageError,
        ValueError,
        OSError,
    )
    for module, name in (
        ("metasr.checkpoint", "CheckpointError"),
        ("metasr.export", "ExportError"),
        ("metasr.export.trt_build", "EngineBuildError"),
        ("metasr.parity", "ParityError"),
    ):
        if module in sys.modules:  # a module never imported cannot have raised (and importing torch is slow)
            errors += (getattr(sys.modules[module], name),)
    return errors


def _resolve_model(spec: str | None, allow_preset: bool = False):
    """``None``/"bundled": the bundled model; an existing file: a checkpoint; else a preset (random weights)."""
    from metasr.bundled import bundled_model_path
    from metasr.checkpoint import load_model
    from metasr.config import PRESETS, preset
    from metasr.model import MetaSR

    if spec in (None, "bundled"):
        return load_model(bundled_model_path())
    if Path(spec).exists():
        return load_model(spec)
    if allow_preset and spec in PRESETS:
        return MetaSR(preset(spec)).eval()
    raise CLIError(
        f"no checkpoint at {spec!r}" + (f" and no preset of that name ({sorted(PRESETS)})" if allow_preset else "")
    )


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from metasr.bundled import bundled_model_path, sample_image
    from metasr.export import export_onnx
    from metasr.runtime.manifest import sha256_file

    model = _resolve_model(args.model, allow_preset=True)
    if args.model in (None, "bundled"):
        source = bundled_model_path()
    else:
        source = Path(args.model) if Path(args.model).exists() else None
    lr_size = None
    if args.lr_size:
        h, w = _parse_pair(args.lr_size, "--lr-size", "270x480 (HxW)")
        if h < 8 or w < 8:
            raise CLIError(f"--lr-size must be at least 8x8, got {args.lr_size}")
        lr_size = (h, w)
    if source is None:
        print(f"note: {args.model!r} is a preset: exporting random weights")
    image = None if args.no_verify else sample_image()[0]
    result = export_onnx(
        model,
        args.out,
        opset=args.opset,
        lr_size=lr_size,
        max_scale=args.max_scale,
        checkpoint_sha256=sha256_file(source) if source else "",
        verify_image=image,
    )
    for c in result.comparisons:
        print(f"  {c}")
    shapes = "static " + "x".join(map(str, lr_size)) if lr_size else "dynamic"
    print(f"wrote {result.out_dir}/feature.onnx ({shapes}), upscale.onnx, manifest.json (opset {args.opset})")
    return 0


def _save_png_atomic(img, path: Path) -> None:
    from PIL import Image

    from metasr.fileio import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")


def cmd_train(args: argparse.Namespace) -> int:
    from metasr.train import TrainConfig, apply_overrides, train

    config = TrainConfig(
        train_dirs=tuple(args.train_dir), val_dir=args.val_dir, preset=args.preset, out_dir=args.out, device=args.device
    )
    config = apply_overrides(config, args.set)
    if not config.train_dirs:
        raise CLIError("give at least one --train-dir")
    last = train(config, resume=args.resume)
    print(f"checkpoint: {last}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from metasr.data import TRAIN_SCALES, list_images
    from metasr.evaluate import evaluate_model
    from metasr.report import write_reports

    model = _resolve_model(args.model)
    scales = args.scales or (list(TRAIN_SCALES) if args.layout == "table1" else [2.0, 3.0, 4.0])
    convention = args.convention or ("metasr" if args.layout == "table1" else "benchmark")
    scores = []
    for folder in args.data:
        paths = list_images(folder)
        if not paths:
            raise CLIError(f"no images in {folder}")
        scores += evaluate_model(
            model,
            paths,
            scales,
            Path(args.cache_dir),
            convention=convention,
            with_ssim=True,
            with_bicubic=not args.no_bicubic,
            dataset=Path(folder).name,
        )
    title = f"{model.config.name or model.config.backbone}: {args.layout} ({convention} LR)"
    for path in write_reports(scores, Path(args.out), args.layout, title):
        print(path)
    print((Path(args.out) / "report.md").read_text())
    return 0


def _parse_pair(text: str, flag: str, example: str) -> tuple[int, int]:
    """Two positive integers written ``AxB`` (``--size WxH``, ``--lr-size HxW``), in the order written."""
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CLIError(f"{flag} must look like {example}, got {text!r}") from None
    return a, b


def _check_upscale_options(args: argparse.Namespace) -> None:
    for name, flag, low in (("max_pixels", "--max-pixels", 1), ("threads", "--threads", 0)):
        if getattr(args, name) < low:
            raise CLIError(f"{flag} must be >= {low}, got {getattr(args, name)}")
    if not 0 <= args.png_compress <= 9:
        raise CLIError(f"--png-compress must be in 0..9, got {args.png_compress}")
    if not args.upscale_budget_mb > 0:
        raise CLIError(f"--upscale-budget-mb must be positive, got {args.upscale_budget_mb}")


def cmd_upscale(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metasr.runtime.batch import Timings, check_jobs, plan_jobs, run_job
    from metasr.runtime.image_io import read_image
    from metasr.runtime.pipeline import Pipeline

    _check_upscale_options(args)
    size = _parse_pair(args.size, "--size", "1920x1080 (WxH)") if args.size else None
    jobs = plan_jobs(args.inputs, args.output, force=args.force)
    if args.artifacts:
        artifacts = Path(args.artifacts)
    else:
        from metasr.artifacts import default_artifacts

        artifacts = default_artifacts()
    with Pipeline(
        artifacts,
        args.backend,
        threads=args.threads,
        upscale_budget_mb=args.upscale_budget_mb,
        feature_tile=args.feature_tile,
        precision=args.precision,
    ) as pipeline:
        # every input is checked (headers, then a full decode in batches) before any output is written
        checked = check_jobs(jobs, pipeline.max_scale, args.scale, size, args.max_pixels, decode=len(jobs) > 1)
        for note in (n for c in checked for n in c.info.notes):
            print(f"metasr: note: {note}", file=sys.stderr)
        bar = tqdm(checked, disable=len(jobs) < 2, unit="image")
        for c in bar:
            timings = Timings()
            t0 = time.perf_counter()
            img = read_image(c.job.source, args.max_pixels)
            timings.add("decode", time.perf_counter() - t0)
            w, h = run_job(pipeline, c.job, img, c.scale, size, args.png_compress, timings)
            (bar.write if len(jobs) > 1 else print)(f"{c.job.target} ({w}x{h})")
            if args.timings:  # encode runs beside upscale, so the stages add up to more than the wall time
                wall = time.perf_counter() - t0
                (bar.write if len(jobs) > 1 else print)(f"  timings: {timings}; wall {wall:.2f} s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from metasr.bundled import sample_image
    from metasr.data import load_rgb, make_pair
    from metasr.evaluate import bicubic_upscale
    from metasr.metrics import psnr_y, quantize
    from metasr.runtime.compare import compare
    from metasr.runtime.pipeline import Pipeline
    from metasr.runtime.projection import check_scale

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder")
    model = _resolve_model(args.model)
    scales = [check_scale(s, model.config.max_scale) for s in args.scales]  # before any work
    hr, name = sample_image() if args.image is None else (load_rgb(args.image), Path(args.image).name)
    if args.model:
        from metasr.export import export_onnx

        artifacts = export_onnx(model, out / "artifacts").out_dir
    else:
        from metasr.artifacts import default_artifacts

        artifacts = default_artifacts()
    print(
        f"model: {model.config.name} ({sum(p.numel() for p in model.parameters()):,} parameters); "
        f"artifacts: {artifacts}; image: {name}"
    )
    print(
        f"{'scale':>5} {'LR':>9} {'SR':>9} {'bicubic dB':>10} {'ONNX RT dB':>10} {'ORT vs torch max|d|':>19} "
        f"{'uint8 equal':>11} {'upscale ms':>10}"
    )
    ok = True
    with Pipeline(artifacts) as pipeline:
        for scale in scales:
            lr, hr_c = make_pair(hr, scale, "metasr")
            feats = pipeline.encode(lr)
            t0 = time.perf_counter()
            sr = pipeline.upscale(feats, scale)
            dt = time.perf_counter() - t0
            with torch.no_grad():
                ref = model(torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float()[None], scale)
            parity = compare(f"x{scale:g}", sr, ref.numpy(), atol=1e-2, min_uint8_equal=0.999)
            ok &= bool(parity)
            img = quantize(sr[0].transpose(1, 2, 0))
            bic = bicubic_upscale(lr, scale)
            _save_png_atomic(img, out / f"x{scale:g}_metasr.png")
            _save_png_atomic(bic, out / f"x{scale:g}_bicubic.png")
            print(
                f"{scale:>5g} {lr.shape[1]:>4}x{lr.shape[0]:<4} {img.shape[1]:>4}x{img.shape[0]:<4} "
                f"{psnr_y(bic, hr_c, scale):>10.2f} {psnr_y(img, hr_c, scale):>10.2f} {parity.max_abs:>19.1e} "
                f"{100 * parity.uint8_equal:>10.3f}% {dt * 1e3:>10.1f}"
            )
    print(f"images written to {out.resolve()} (x*_metasr.png from ONNX Runtime, x*_bicubic.png for comparison)")
    if not ok:
        raise CLIError("ONNX Runtime output differs from PyTorch beyond the export tolerances")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
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


def cmd_bench(args: argparse.Namespace) -> int:
    from metasr.bench import dump, format_bench, run_bench
    from metasr.runtime.projection import check_scale

    if args.repeats < 1:
        raise CLIError(f"--repeats must be >= 1, got {args.repeats}")
    model = _resolve_model(args.model, allow_preset=True)
    check_scale(args.scale, model.config.max_scale)
    h, w = _parse_pair(args.lr_size, "--lr-size", "80x120 (HxW)")
    memory = None if args.no_memory else _parse_pair(args.memory_output, "--memory-output", "1920x1080 (WxH)")
    if args.precision != "fp32" and not args.artifacts:
        raise CLIError(f"--precision {args.precision} needs --artifacts DIR holding {args.precision} graphs")
    if args.backend == "trt" and not args.artifacts:
        raise CLIError("--backend trt needs --artifacts DIR holding engines (metasr build-engine)")
    from metasr.runtime.backends import ALL_BACKENDS, backend_available

    if args.backend not in ALL_BACKENDS:
        raise CLIError(f"unknown --backend {args.backend!r}; known: {list(ALL_BACKENDS)}")
    reason = backend_available(args.backend)
    if reason:
        raise CLIError(reason)
    res = run_bench(
        model,
        (h, w),
        args.scale,
        repeats=args.repeats,
        memory_output=memory,
        artifacts=args.artifacts,
        precision=args.precision,
        backend=args.backend,
    )
    print(format_bench(res))
    if args.json:
        dump(res, Path(args.json))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from metasr.calibration.calibrate import CalibrationConfig, calibrate, image_dirs_arg

    config = CalibrationConfig(
        image_dirs=image_dirs_arg(args.images),
        precision=args.precision,
        method=args.method,
        percentile=args.percentile,
        budget_db=args.budget_db,
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
            f"{form['file']} ({target}): worst-bin loss {final['loss_db']:.3f} dB (budget {args.budget_db:g}), "
            f"{final['psnr_vs_fp32']:.1f} dB vs FP32 output; kept in float: {kept}"
            + (f"; {form['int8_kernels']} INT8 convolutions" if "int8_kernels" in form else "")
        )
    print(f"report: {result.report_md}")
    if not result.met:
        print(f"metasr: budget not met; {args.artifacts} unchanged (see {result.report_md})", file=sys.stderr)
        return 1
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from metasr.export.trt_build import EngineBuildConfig, build_engines

    sizes = tuple(_parse_pair(s, "--lr-size", "256x256 (HxW)") for s in (args.lr_size or ["256x256"]))
    cfg = EngineBuildConfig(
        precision=args.precision,
        lr_sizes=sizes,
        max_lr=_parse_pair(args.max_lr, "--max-lr", "540x960 (HxW)") if args.max_lr else None,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        workspace_mb=args.workspace_mb,
        upscale_impl=args.upscale_impl,
    )
    for spec in build_engines(args.artifacts, cfg):
        print(f"wrote {Path(args.artifacts) / spec.file} ({spec.kind}, {spec.precision})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="metasr", description="Meta-SR arbitrary-scale super-resolution toolchain")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (the paper's recipe; override fields with --set)")
    p.add_argument("--train-dir", action="append", default=[], help="HR image folder (repeatable)")
    p.add_argument("--val-dir", help="HR folder validated on (Y-PSNR at the config's val_scales)")
    p.add_argument("--preset", default="small")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors + last.state.pt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="PSNR/SSIM tables (the paper's Table 1 or Table 3 layout)")
    p.add_argument("--model", help="checkpoint (.safetensors or official .pt); default: the bundled model")
    p.add_argument("--data", action="append", required=True, help="HR image folder (repeatable)")
    p.add_argument("--layout", choices=["table1", "table3"], default="table3")
    p.add_argument("--scales", type=float, nargs="+")
    p.add_argument(
        "--convention",
        choices=["metasr", "benchmark", "auto"],
        help="LR making rule (default: metasr for table1, benchmark for table3)",
    )
    p.add_argument("--no-bicubic", action="store_true")
    p.add_argument("--cache-dir", default=".cache/metasr")
    p.add_argument("--out", default="runs/eval")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export-onnx", help="write feature.onnx, upscale.onnx and manifest.json, verified")
    p.add_argument("--model", help="checkpoint or preset name; default: the bundled model")
    p.add_argument("--out", required=True, help="artifact directory (replaced whole, atomically)")
    p.add_argument("--opset", type=int, default=17)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--lr-size", metavar="HxW", help="static feature graph for this LR size")
    size.add_argument("--dynamic", action="store_true", help="dynamic h/w feature graph (default)")
    p.add_argument("--max-scale", type=float, help="largest scale the artifact accepts (default: the model's)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("upscale", help="upscale image files with the ONNX artifacts (no PyTorch needed)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--scale", type=float, help="scale factor r: output int(r*h) x int(r*w)")
    target.add_argument(
        "--size",
        metavar="WxH",
        help="exact output size: the smallest scale covering it, centre-cropped (no crop when the aspect ratios agree)",
    )
    p.add_argument("--artifacts", help="artifact directory (default: the bundled model, exported once)")
    p.add_argument("--backend", default="ort", help="ort (CPU), ort-cuda or trt (engines from metasr build-engine)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--max-pixels", type=int, default=100_000_000, help="refuse larger inputs or outputs (checked from the header)"
    )
    p.add_argument("--upscale-budget-mb", type=float, default=512, help="upscale stage working-memory budget")
    p.add_argument("--feature-tile", type=int, default=512, help="feature stage tile side (LR pixels)")
    p.add_argument("--png-compress", type=int, default=1, metavar="0-9", help="PNG zlib level (default 1: fast)")
    p.add_argument("--timings", action="store_true", help="print where the time went per image")
    p.add_argument("--force", action="store_true", help="allow overwriting an input file")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="graphs to run")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser(
        "parity",
        help="every available backend x precision against PyTorch and ground truth (exit 0 pass, 1 fail, 2 usage)",
    )
    p.add_argument("--artifacts", required=True, help="artifact directory (manifest.json + graphs)")
    p.add_argument("--images", action="append", required=True, metavar="DIR", help="HR image folder (repeatable)")
    p.add_argument("--lr-given", action="store_true", help="the images are LR inputs (no ground truth)")
    p.add_argument("--model", help="reference checkpoint (default: the one the manifest records, e.g. bundled)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.5, 2.0, 2.5, 3.0, 4.0])
    p.add_argument("--backends", nargs="+", help="default: all known; unavailable ones are skipped with the reason")
    p.add_argument("--precisions", nargs="+", help="default: every precision the artifacts hold")
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
    p.add_argument("--percentile", type=float, default=99.999, help="for --method percentile")
    p.add_argument("--budget-db", type=float, default=0.1, help="max Y-PSNR loss vs FP32, worst scale bin")
    p.add_argument("--crops", type=int, default=128, help="calibration crops")
    p.add_argument("--held-apart", type=int, default=24, help="crops from held-apart images (measurements)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-kept", type=int, default=8, help="most tensors the sensitivity pass keeps in float")
    p.add_argument("--allow-eval-images", action="store_true", help="allow Set5/Set14/... as calibration images")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("bench", help="the paper's Table 2 here: stage times, zoom, memory; PyTorch vs ONNX Runtime")
    p.add_argument("--model", help="checkpoint or preset (random weights are fine for timing); default: bundled")
    p.add_argument("--lr-size", default="80x120", metavar="HxW", help="LR size (default: B100 at x4)")
    p.add_argument("--scale", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--memory-output", default="1920x1080", metavar="WxH", help="output size of the memory run")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--artifacts", help="run ONNX Runtime on this artifact directory instead of a fresh export")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="graphs / engines to run")
    p.add_argument("--backend", default="ort", help="runtime backend beside PyTorch: ort, ort-cuda or trt")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("build-engine", help="TensorRT engines from an artifact directory (needs a GPU and TensorRT)")
    p.add_argument("--artifacts", required=True, help="artifact directory (engines and manifest are added to it)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    p.add_argument("--lr-size", action="append", metavar="HxW", help="static feature engine size (repeatable)")
    p.add_argument("--max-lr", metavar="HxW", help="largest LR region per upscale call (default: largest --lr-size)")
    p.add_argument("--timing-cache", help="TensorRT timing cache file (read if present, updated)")
    p.add_argument("--workspace-mb", type=int, default=2048)
    p.add_argument(
        "--upscale-impl",
        choices=["plugin", "body"],
        default="plugin",
        help="plugin: require the metasr::MetaUpscale plugin layer; body: accept an imported ONNX function body",
    )
    p.set_defaults(func=cmd_build_engine)

    p = sub.add_parser("demo", help="the bundled model through ONNX Runtime on a sample image, checked against PyTorch")
    p.add_argument("--model")
    p.add_argument("--image")
    p.add_argument("--scales", type=float, nargs="+", default=[1.5, 2.0, 2.7, 3.3, 4.0])
    p.add_argument("--out", default="out/demo")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return int(args.func(args))
    except KeyboardInterrupt as e:  # SIGINT or SIGTERM: cleanup ran on the way out
        terminated = isinstance(e, Terminated)
        print(f"metasr: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except MemoryError:
        print("metasr: error: out of memory (lower --upscale-budget-mb or --feature-tile)", file=sys.stderr)
        return 2
    except _expected_errors() as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"metasr: error: {msg}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
