"""The ``metasr`` command: a thin dispatcher over one small module per command group.

``metasr.cli.model`` (train, eval, export-onnx, demo: PyTorch), ``metasr.cli.upscale`` (torch-free),
``metasr.cli.serve`` (Ray Serve), ``metasr.cli.view`` (view: the browser page), ``metasr.cli.quality`` (parity,
calibrate, bench), ``metasr.cli.engine`` (build-engine: TensorRT). Bad input exits 2 with a one-line error
(``metasr: error: ...``), never a traceback; an interrupt exits 130 (SIGINT) or 143 (SIGTERM) after every
cleanup ran.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from metasr.cli import engine, model, quality, serve, upscale, view
from metasr.cli.common import CLIError, missing_dependency
from metasr.interrupts import Terminated, handle_signals

__all__ = ["CLIError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (``metasr: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"metasr: error: {self.prog.removeprefix('metasr ')}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """User-facing error types, importing only what is installed (the runtime commands work without torch)."""
    from PIL import UnidentifiedImageError

    from metasr.artifacts import ModelExtraMissing
    from metasr.runtime.backends import BackendError
    from metasr.runtime.engine_profile import ProfileError
    from metasr.runtime.engines import EngineMismatchError
    from metasr.runtime.manifest import ManifestError
    from metasr.runtime.projection import UnsupportedScaleError
    from metasr.runtime.trt_env import TensorRTUnavailable

    errors: tuple[type[BaseException], ...] = (
        CLIError,
        ModelExtraMissing,
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
        ("metasr.bench", "BenchError"),
        ("metasr.checkpoint", "CheckpointError"),
        ("metasr.export", "ExportError"),
        ("metasr.export.trt_build", "EngineBuildError"),
        ("metasr.parity", "ParityError"),
        ("metasr.view", "ViewError"),
    ):
        if module in sys.modules:  # a module never imported cannot have raised (and importing torch is slow)
            errors += (getattr(sys.modules[module], name),)
    return errors


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="metasr", description="Meta-SR arbitrary-scale super-resolution toolchain")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    model.register(sub)
    upscale.register(sub)
    quality.register(sub)
    engine.register(sub)
    serve.register(sub)
    view.register(sub)
    return ap


def _interrupted(terminated: bool) -> int:
    print(f"metasr: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
    return 143 if terminated else 130


def _report(e: BaseException, command: str, received: Sequence[int]) -> int | None:
    """Print the one-line report of ``e`` and return the exit code; None for an unexpected error (traceback)."""
    if received or isinstance(e, KeyboardInterrupt):  # an interrupt, whatever error it became on its way
        return _interrupted(received[-1] == signal.SIGTERM if received else isinstance(e, Terminated))
    if isinstance(e, ModuleNotFoundError):  # an optional dependency: name the extra that brings it
        message = missing_dependency(e, command)
        if message is None:
            return None
    elif isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)):
        # (PyTorch's CPU allocator raises a RuntimeError)
        hint = " (lower --memory-mb to what the machine has free)" if command == "upscale" else ""
        message = "out of memory" + hint
    elif isinstance(e, _expected_errors()):
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
    else:
        return None
    print(f"metasr: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``metasr ARGV``; returns the exit code (a usage error too: one line on stderr, 2)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: a usage error (printed as one line) or --help
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    with handle_signals() as received:
        try:
            code = int(args.func(args))
        except BaseException as e:  # cleanup ran on the way out (an interrupt is a KeyboardInterrupt)
            reported = _report(e, args.command, received)
            if reported is None:
                raise
            return reported
        if received:  # a signal whose exception something swallowed on the way (a probe for a package)
            return _interrupted(received[-1] == signal.SIGTERM)
        return code


if __name__ == "__main__":
    sys.exit(main())
