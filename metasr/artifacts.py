"""The bundled model's ONNX artifacts, exported once into a cache directory and reused.

The cache directory is keyed by the checkpoint's sha256 *and* by the exporter: the metasr version and a hash
of the source files that decide the graphs' bytes and the manifest (:func:`exporter_digest`), so an upgraded
or edited exporter never reuses graphs an older one wrote. A cached directory is used only when its manifest
reads and verifies like any artifact directory (content hash, every file's sha256) and records that
checkpoint and that exporter; otherwise it is exported again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from metasr.bundled import bundled_model_path
from metasr.interrupts import reraise_interrupt
from metasr.runtime.manifest import Manifest, ManifestError, sha256_file

__all__ = ["EXPORTER_MODULES", "ModelExtraMissing", "cache_root", "default_artifacts", "exporter_digest"]

# packages and modules whose source decides what export_onnx writes (graphs, manifest): any change to them
# gives the bundled model a new cache directory
EXPORTER_MODULES = (
    "metasr.export",
    "metasr.backbones",
    "metasr.model",
    "metasr.weight_predictor",
    "metasr.config",
    "metasr.checkpoint",
    "metasr.runtime.feeds",
    "metasr.runtime.projection",
    "metasr.runtime.manifest",
    "metasr.runtime.manifest_checks",
)


class ModelExtraMissing(RuntimeError):
    """The bundled model's graphs are not exported yet and this install cannot export them (no PyTorch)."""


def cache_root() -> Path:
    """``$METASR_CACHE``, else ``$XDG_CACHE_HOME/metasr``, else ``~/.cache/metasr``."""
    if os.environ.get("METASR_CACHE"):
        return Path(os.environ["METASR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metasr"


def _source_files(module: str) -> list[Path]:
    """The .py files of a module or package, found without importing it (the exporter needs torch)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no module {module}", name=module)
    origin = Path(spec.origin)
    return sorted(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [origin]


def exporter_digest() -> str:
    """sha256 (hex) of the metasr version and the source of :data:`EXPORTER_MODULES` (their file names and
    bytes, in a fixed order)."""
    from metasr import __version__

    digest = hashlib.sha256(f"metasr {__version__}\n".encode())
    for module in EXPORTER_MODULES:
        for path in _source_files(module):
            digest.update(f"{module}/{path.name}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _usable(directory: Path, checkpoint: str, exporter: str) -> bool:
    try:
        manifest = Manifest.read(directory)
    except ManifestError:
        return False
    return manifest.checkpoint_sha256 == checkpoint and manifest.tools.get("exporter") == exporter


def default_artifacts(verbose: bool = True) -> Path:
    """Artifacts of the bundled model; exported (needs torch + onnx) the first time, keyed by the checkpoint's
    sha256 and the exporter (see the module docstring)."""
    model_path = bundled_model_path()
    digest = sha256_file(model_path)
    exporter = exporter_digest()
    directory = cache_root() / "artifacts" / f"bundled-{digest[:16]}-{exporter[:12]}"
    if _usable(directory, digest, exporter):
        return directory
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
    export_onnx(load_model(model_path), directory, checkpoint_sha256=digest)  # records exporter_digest()
    return directory
