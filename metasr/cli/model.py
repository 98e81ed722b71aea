"""``metasr train``, ``eval``, ``export-onnx`` and ``demo``: the commands that need the PyTorch model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from metasr.cli.common import SCALE, CLIError, int_range, pair, resolve_model
from metasr.limits import MAX_OPSET, MAX_STATIC_LR, MIN_OPSET

__all__ = ["register"]


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
    from metasr.runtime.projection import check_scale

    model = resolve_model(args.model)
    scales = args.scales or (list(TRAIN_SCALES) if args.layout == "table1" else [2.0, 3.0, 4.0])
    scales = [check_scale(s, model.config.max_scale) for s in scales]  # before any work
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


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from metasr.bundled import bundled_model_path, sample_image
    from metasr.export import export_onnx
    from metasr.runtime.manifest import sha256_file

    model = resolve_model(args.model, allow_preset=True)
    if args.model in (None, "bundled"):
        source = bundled_model_path()
    else:
        source = Path(args.model) if Path(args.model).exists() else None
    lr_size = args.lr_size
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
    model = resolve_model(args.model)
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


def register(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--scales", type=SCALE, nargs="+")
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
    p.add_argument("--opset", type=int_range(MIN_OPSET, MAX_OPSET), default=17)
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--lr-size",
        type=pair("--lr-size", "270x480 (HxW)", low=8, high=MAX_STATIC_LR),
        metavar="HxW",
        help="static feature graph size",
    )
    size.add_argument("--dynamic", action="store_true", help="dynamic h/w feature graph (default)")
    p.add_argument("--max-scale", type=SCALE, help="largest scale the artifact accepts (default: the model's)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("demo", help="the bundled model through ONNX Runtime on a sample image, checked against PyTorch")
    p.add_argument("--model")
    p.add_argument("--image")
    p.add_argument("--scales", type=SCALE, nargs="+", default=[1.5, 2.0, 2.7, 3.3, 4.0])
    p.add_argument("--out", default="out/demo")
    p.set_defaults(func=cmd_demo)
