"""TensorRT's own bindings wheels, without TensorRT: the pure-Python ``tensorrt.plugin`` sources run against a
stand-in ``tensorrt`` module, and the compiled ``tensorrt.so`` is read for the names it exports.

The wheels (``tensorrt-cu12-bindings==10.9.*``, ``tensorrt-cu13-bindings==11.4.*``, ~1.2 MB each) come from
PyPI into ``~/.cache/metasr/trt-bindings`` once; they cannot be imported here (no ``libnvinfer``).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from unittest import mock

import pytest

WHEELS = {"10.9": "tensorrt-cu12-bindings==10.9.*", "11.4": "tensorrt-cu13-bindings==11.4.*"}
CACHE = Path.home() / ".cache" / "metasr" / "trt-bindings"


def bindings_dir(version: str) -> Path:
    """The unpacked ``tensorrt_bindings`` package of one wheel (downloaded once); skips if unreachable."""
    root = CACHE / version
    pkg = root / "tensorrt_bindings"
    if not (pkg / "tensorrt.so").is_file():
        root.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", WHEELS[version], "-d", str(root)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        wheels = sorted(root.glob("tensorrt_cu*_bindings-*.whl"))
        if res.returncode or not wheels:
            pytest.skip(f"cannot download {WHEELS[version]} from PyPI: {res.stderr.strip()[-200:]}")
        with zipfile.ZipFile(wheels[-1]) as z:
            z.extractall(root)
    return pkg


@functools.cache
def _exports(version: str) -> tuple[bytes, frozenset[str]]:
    pkg = bindings_dir(version)
    python_names = {
        n.name if isinstance(n, ast.FunctionDef | ast.ClassDef) else t.id
        for n in ast.parse((pkg / "__init__.py").read_text()).body
        for t in (n.targets if isinstance(n, ast.Assign) else [n])
        if isinstance(n, ast.FunctionDef | ast.ClassDef) or isinstance(t, ast.Name)
    }
    return (pkg / "tensorrt.so").read_bytes(), frozenset(python_names)


def exported_names(version: str, name: str) -> bool:
    """Whether TensorRT ``version``'s bindings export ``name``: a NUL-terminated string in the compiled
    ``tensorrt.so`` (what ``strings`` lists; the linker may store a name as the tail of a longer string, so
    the match is on ``name + NUL``), or a top-level definition of the bindings' ``__init__.py``."""
    data, python_names = _exports(version)
    return name in python_names or (name.encode() + b"\0") in data


def _stub_tensorrt(package_dir: Path) -> types.ModuleType:
    """A stand-in ``tensorrt``: classes for the ``I*`` interfaces the plugin sources subclass, mocks for the
    rest (enums, registry, logger), and the wheel's real ``plugin/`` package as ``tensorrt.plugin``."""
    trt = types.ModuleType("tensorrt")
    trt.__path__ = [str(package_dir)]
    trt.__version__ = "stub"
    made: dict[str, object] = {}

    def getattr_(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in made:
            if name.startswith("I") and name[1:2].isupper():
                made[name] = type(name, (), {"__init__": lambda self, *a, **k: None})
            else:
                made[name] = mock.MagicMock(name=f"tensorrt.{name}")
        return made[name]

    trt.__getattr__ = getattr_
    return trt


def _ours(module: str) -> bool:
    return module == "tensorrt" or module.startswith(("tensorrt.", "metasr.export.trt_plugin"))


@contextlib.contextmanager
def stub_tensorrt(version: str):
    """``import tensorrt`` / ``tensorrt.plugin`` give the stand-in and the real plugin sources of ``version``."""
    saved = {k: v for k, v in sys.modules.items() if _ours(k)}
    for k in saved:
        del sys.modules[k]
    sys.modules["tensorrt"] = _stub_tensorrt(bindings_dir(version))
    try:
        yield importlib.import_module("tensorrt.plugin")
    finally:
        for k in [k for k in sys.modules if _ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
