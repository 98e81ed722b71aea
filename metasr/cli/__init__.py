"""The ``metasr`` command: a thin dispatcher over one small module per command group.

``metasr.cli.model`` (train, eval, export-onnx, demo: PyTorch), ``metasr.cli.upscale`` (torch-free),
``metasr.cli.quality`` (parity, calibrate, bench), ``metasr.cli.engine`` (build-engine: TensorRT). Bad input
exits 2 with a one-line error (``metasr: error: ...``), never a traceback; an interrupt exits 130 (SIGINT) or
143 (SIGTERM) after every cleanup ran.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from metasr.cli import engine, model, quality, upscale
from metasr.cli.common import CLIError, missing_dependency

__all__ = ["CLIError", "build_parser", "main"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` (temporary files, directories) runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


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
        ("metasr.checkpoint", "CheckpointError"),
        ("metasr.export", "ExportError"),
        ("metasr.export.trt_build", "EngineBuildError"),
        ("metasr.parity", "ParityError"),
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
    except ModuleNotFoundError as e:  # an optional dependency: name the extra that brings it
        message = missing_dependency(e, args.command)
        if message is None:
            raise
        print(f"metasr: error: {message}", file=sys.stderr)
        return 2
    except MemoryError:
        print("metasr: error: out of memory (upscale: lower --memory-mb to what the machine has free)", file=sys.stderr)
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
