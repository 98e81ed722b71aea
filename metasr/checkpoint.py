"""Checkpoints: self-describing safetensors (config + weights), and strict loading of official state dicts.

A ``.safetensors`` checkpoint stores the :class:`ModelConfig` as JSON in its metadata, so it loads with no
side configuration. A ``.pt``/``.pth`` file is read as a plain state dict in the official Meta-RDN key
layout (no prefix) with ``torch.load(weights_only=True)`` (never executing pickled code) and loaded strictly.

The config is untrusted input: it is parsed with bounded size and nesting (:meth:`ModelConfig.from_json`), its
ranges and the model's parameter count are checked from the numbers alone (:func:`metasr.model.parameter_count`),
and the memory loading needs (the file's tensors and the model's, float32) against what the machine has
available, all before any module is built. Then the tensor names and shapes are checked against the config:
the expected ones come from the model built on PyTorch's ``meta`` device (no memory), and for safetensors the
actual ones from the file's header (no tensor read). A tiny file whose config describes a huge model is refused
without allocating it. Weights that are not finite (NaN, inf) are refused once read: such a model exports and
evaluates without an error, and every image it makes is garbage. Only regular files are read (a FIFO would
block the reader forever).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from metasr.config import ModelConfig, preset
from metasr.fileio import atomic_path
from metasr.model import MetaSR, parameter_count

__all__ = ["CheckpointError", "load_model", "official_state_dict", "read_metadata", "save_model"]

FORMAT = "metasr-checkpoint"
FORMAT_VERSION = "1"
_TOP_LEVEL = ("sub_mean.", "add_mean.", "P2W.")
_SHOW = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose tensors do not fit the model exactly."""


def _to_official(key: str) -> str:
    return key.removeprefix("backbone.")


def _from_official(key: str) -> str:
    return key if key.startswith(_TOP_LEVEL) else f"backbone.{key}"


def official_state_dict(model: MetaSR) -> dict[str, torch.Tensor]:
    """The model's tensors under the official key names (backbone keys without prefix)."""
    return {_to_official(k): v for k, v in model.state_dict().items()}


def _available_bytes() -> int | None:
    """Memory the kernel says can be allocated without swapping (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _meta_model(config: ModelConfig, source: str) -> MetaSR:
    """The model of ``config`` on the meta device (names and shapes, no storage), after its size was checked:
    ranges and parameter count from the config alone, then twice its float32 weights (the file's tensors and
    the model's) against the memory available."""
    try:
        count = parameter_count(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: its config does not describe a buildable model ({e})") from None
    needed, available = 2 * 4 * count, _available_bytes()
    if available is not None and needed > available:
        raise CheckpointError(
            f"{source}: its model has {count:,} parameters; loading needs ~{needed / 2**30:.1f} GiB, "
            f"{available / 2**30:.1f} GiB available"
        )
    try:
        with torch.device("meta"):
            return MetaSR(config)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{source}: its config does not describe a buildable model ({e})") from None


def _check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming the tensors that hold NaN or inf values."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
        raise CheckpointError(f"{source} has non-finite weights (NaN or inf) in {', '.join(bad[:_SHOW])}{more}")


def _check_strict(model: MetaSR, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``shapes`` (official names -> shape) fit ``model`` exactly."""
    expected = {_to_official(k): tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    misshaped = [
        f"{k} (expected {expected[k]}, got {tuple(shapes[k])})"
        for k in expected
        if k in shapes and tuple(shapes[k]) != expected[k]
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
        if keys:
            more = f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:_SHOW])}{more}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit a {model.config.name or model.config.backbone} model: " + "; ".join(problems)
        )


def _load_state(config: ModelConfig, state: dict[str, torch.Tensor], source: str) -> MetaSR:
    _check_strict(_meta_model(config, source), {k: tuple(v.shape) for k, v in state.items()}, source)
    _check_finite(state, source)
    model = MetaSR(config)
    model.load_state_dict({_from_official(k): v for k, v in state.items()}, strict=True)
    return model.eval()


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header (no tensor data is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def save_model(model: MetaSR, path: str | os.PathLike[str], extra: dict[str, str] | None = None) -> Path:
    """Write ``model`` (config + weights, official key names) to a safetensors file atomically."""
    path = Path(path)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json(), **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in official_state_dict(model).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a metasr safetensors checkpoint (raises :class:`CheckpointError` otherwise)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a metasr checkpoint (no config metadata)")
    return meta


def load_model(path: str | os.PathLike[str], config: ModelConfig | str | None = None) -> MetaSR:
    """Load a checkpoint into a fresh :class:`MetaSR` in eval mode, strictly.

    ``.safetensors``: the config stored inside is used (``config`` must be None or equal). ``.pt``/``.pth``:
    a plain state dict in the official key layout; ``config`` (a ModelConfig or preset name) defaults to
    the official Meta-RDN (``"rdn"``).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if not path.is_file():  # a FIFO or a device would block the reader or never end
        raise CheckpointError(f"{path} is not a regular file")
    if isinstance(config, str):
        config = preset(config)
    if path.suffix == ".safetensors":
        try:
            stored = ModelConfig.from_json(read_metadata(path)["config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: bad model config in its metadata ({e})") from None
        if config is not None and config != stored:
            raise CheckpointError(f"{path} holds a {stored.name or stored.backbone} model, not the config given")
        _check_strict(_meta_model(stored, str(path)), _header_shapes(path), str(path))  # before any allocation
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"cannot read {path}: {e}") from None
        return _load_state(stored, state, str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"cannot read {path} as a weights-only state dict: {e}".splitlines()[0]) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a plain state dict of tensors")
    return _load_state(config or preset("rdn"), state, str(path))
