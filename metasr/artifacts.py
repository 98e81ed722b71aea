"""The bundled model's ONNX artifacts, exported once into a cache directory and reused."""

from __future__ import annotations

import os
from pathlib import Path

from metasr.bundled import bundled_model_path
from metasr.interrupts import reraise_interrupt
from metasr.runtime.manifest import Manifest, ManifestError, sha256_file

__all__ = ["ModelExtraMissing", "cache_root", "default_artifacts"]


class ModelExtraMissing(RuntimeError):
    """The bundled model's graphs are not exported yet and this install cannot export them (no PyTorch)."""


def cache_root() -> Path:
    """``$METASR_CACHE``, else ``$XDG_CACHE_HOME/metasr``, else ``~/.cache/metasr``."""
    if os.environ.get("METASR_CACHE"):
        return Path(os.environ["METASR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metasr"


def default_artifacts(verbose: bool = True) -> Path:
    """Artifacts of the bundled model; exported (needs torch + onnx) the first time, keyed by its sha256."""
    model_path = bundled_model_path()
    digest = sha256_file(model_path)
    directory = cache_root() / "artifacts" / f"bundled-{digest[:16]}"
    try:
        Manifest.read(directory)
        return directory
    except ManifestError:
        pass
    try:
        from metasr.checkpoint import load_model
        from metasr.export import export_onnx
    except ModuleNotFoundError as e:
        reraise_interrupt(e)
        raise ModelExtraMissing(
            f"the bundled model is exported to ONNX on first use, which needs {e.name} "
            "(pip install 'metasr[model]'); or pass --artifacts DIR exported elsewhere"
        ) from None

    if verbose:
        print(f"exporting the bundled model to {directory} (once)")
    export_onnx(load_model(model_path), directory, checkpoint_sha256=digest)
    return directory
