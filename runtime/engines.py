"""What the manifest records about a TensorRT engine, validated (stdlib only; no TensorRT needed to read it).

A TensorRT engine runs only on the TensorRT version that built it and on GPUs of the compute capability it
was built for. Engine entries in ``manifest.json`` (format ``tensorrt``) carry, in ``extra``:

``tensorrt_version`` "10.9.0.34"; ``gpu_name`` "NVIDIA L4"; ``compute_capability`` "8.9"; ``source`` the ONNX file
it was built from; for feature engines ``lr_size`` [h, w] (static input); for upscale engines ``profile``
(:class:`metasr.runtime.engine_profile.UpscaleProfile` as JSON), ``plugin_impl`` "aot" | "jit" | "body" and
``ptx_isa`` "8.0".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from metasr.runtime.engine_profile import ProfileError, UpscaleProfile

__all__ = ["EngineInfo", "EngineMismatchError", "check_compatible"]

_VERSION = re.compile(r"^\d+\.\d+(\.\d+){0,2}$")
_CC = re.compile(r"^\d+\.\d+$")
PLUGIN_IMPLS = ("aot", "jit", "body")


class EngineMismatchError(RuntimeError):
    """An engine built by another TensorRT version or for another GPU than the one here."""


@dataclass(frozen=True)
class EngineInfo:
    """Validated engine metadata (see the module docstring)."""

    kind: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    source: str
    lr_size: tuple[int, int] | None = None
    profile: UpscaleProfile | None = None
    plugin_impl: str | None = None
    ptx_isa: str | None = None

    @classmethod
    def from_extra(cls, kind: str, extra: dict[str, Any]) -> EngineInfo:
        """Parse and validate ``extra``; raises ``ValueError`` naming the bad field."""

        def text(key: str, pattern: re.Pattern[str] | None = None) -> str:
            value = extra.get(key)
            if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
                like = f" matching {pattern.pattern}" if pattern else ""
                raise ValueError(f"{kind} engine: extra.{key} must be a non-empty string{like}, got {value!r}")
            return value

        common = {
            "kind": kind,
            "tensorrt_version": text("tensorrt_version", _VERSION),
            "gpu_name": text("gpu_name"),
            "compute_capability": text("compute_capability", _CC),
            "source": text("source"),
        }
        if kind == "feature":
            size = extra.get("lr_size")
            if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
                raise ValueError(f"feature engine: extra.lr_size must be [h, w] of positive ints, got {size!r}")
            return cls(**common, lr_size=(size[0], size[1]))
        if kind == "upscale":
            impl = extra.get("plugin_impl")
            if impl not in PLUGIN_IMPLS:
                raise ValueError(f"upscale engine: extra.plugin_impl must be one of {PLUGIN_IMPLS}, got {impl!r}")
            if not isinstance(extra.get("profile"), dict):
                raise ValueError("upscale engine: extra.profile must be an object")
            try:
                profile = UpscaleProfile.from_json(extra["profile"])
            except ProfileError as e:
                raise ValueError(f"upscale engine: {e}") from None
            return cls(**common, profile=profile, plugin_impl=impl, ptx_isa=text("ptx_isa", _CC))
        raise ValueError(f"engine kind must be 'feature' or 'upscale', got {kind!r}")

    def to_extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "source": self.source,
        }
        if self.lr_size is not None:
            out["lr_size"] = list(self.lr_size)
        if self.profile is not None:
            out |= {"profile": self.profile.to_json(), "plugin_impl": self.plugin_impl, "ptx_isa": self.ptx_isa}
        return out


def check_compatible(info: EngineInfo, file: str, tensorrt_version: str, compute_capability: str, gpu: str) -> None:
    """Refuse, in one line naming both sides, an engine built by another TensorRT or for another GPU."""
    if info.tensorrt_version != tensorrt_version:
        raise EngineMismatchError(
            f"{file} was built by TensorRT {info.tensorrt_version}; this is TensorRT {tensorrt_version} "
            "(rebuild it with metasr build-engine)"
        )
    if info.compute_capability != compute_capability:
        raise EngineMismatchError(
            f"{file} was built for {info.gpu_name} (compute capability {info.compute_capability}); this GPU is "
            f"{gpu} ({compute_capability}) (rebuild it with metasr build-engine)"
        )
