"""PTX of the ``MetaUpscale`` kernel for a chosen GPU, compiled without a GPU (what the AOT plugin stores).

The PTX is pinned to ISA 8.0, which every driver since CUDA 12.0 loads (JetPack 6 included), and to a
generic target (``sm_90``, never the arch-specific ``sm_90a`` Triton picks for Hopper: such code would not
load on later GPUs). The kernel needs no Triton scratch memory: TensorRT passes null for Triton's two
hidden trailing pointer parameters, and :func:`compile_ptx` refuses a build that would read them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass

from metasr.kernels.spec import DTYPES, INPUT_PARAMS, OUTPUT_PARAMS, KernelConfig, default_config, scalar_params

__all__ = ["PTX_ISA", "SUPPORTED_CC", "PtxKernel", "compile_ptx", "ptx_entry_params", "ptx_read_params"]

PTX_ISA = 80  # PTX ISA 8.0: loads on CUDA 12.0+ drivers (>= 525)
SUPPORTED_CC = (75, 80, 86, 87, 89, 90, 100, 120)
_ARCH_SPECIFIC = ("wgmma", "setmaxnreg", "tcgen05", "cp.async.bulk")  # instructions that need sm_XXa


@dataclass(frozen=True)
class PtxKernel:
    """A compiled kernel and what a launcher needs.

    ``params``: the kernel's declared parameters in launch order (:data:`metasr.kernels.spec.PARAMS`); the PTX
    entry has these plus Triton's two hidden scratch pointers, which must be passed as null.
    Launch: grid ``(cdiv(W, config.block_w), cdiv(H, config.block_h), N)``, ``threads`` threads per block,
    ``shared_bytes`` bytes of dynamic shared memory.
    """

    ptx: str
    name: str
    cc: int
    dtype: str
    config: KernelConfig
    threads: int
    shared_bytes: int
    params: tuple[str, ...]
    ptx_version: str
    target: str
    scratch_bytes: int = 0

    @property
    def entry_params(self) -> list[str]:
        """The PTX entry's parameter types in order, e.g. ``['.u64', ..., '.u32', ...]``."""
        return ptx_entry_params(self.ptx, self.name)


def ptx_entry_params(ptx: str, name: str) -> list[str]:
    """Parameter types of the ``.entry name(...)`` in ``ptx``, in order (``.u64`` pointers, ``.u32`` ints)."""
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\((.*?)\)", ptx, flags=re.S)
    if not m:
        raise ValueError(f"no .entry {name} in the PTX")
    return re.findall(r"\.param\s+(\.[a-z0-9]+)", m.group(1))


def ptx_read_params(ptx: str, name: str) -> set[int]:
    """Indices of the entry's parameters the PTX actually loads (``ld.param ... [name_param_<i>]``)."""
    return {int(i) for i in re.findall(rf"ld\.param\.\w+\s+%\w+,\s*\[{re.escape(name)}_param_(\d+)", ptx)}


def _signature(dtype: str, config: KernelConfig) -> tuple[dict[str, str], dict[str, int]]:
    """The kernel's parameter types and compile-time constants for ``dtype`` and ``config.layout``."""
    ft = "*fp32" if dtype == "fp32" else "*fp16"
    sig = {"feat_ptr": ft, "weight_ptr": ft}
    sig |= {n: "*i64" for n in ("row_src_ptr", "row_idx_ptr", "col_src_ptr", "col_idx_ptr")}
    if config.layout == "filter":
        sig |= {f"{n}_ptr": "*i64" for n in INPUT_PARAMS[6:]}
        consts = {"BLOCK_Y": config.block_h, "BLOCK_X": config.block_w, "BLOCK_C": config.block_c}
        consts |= {"WIN": config.window, "IEEE": int(dtype == "fp32")}
    else:
        sig |= {f"hint_{n}": "*i64" for n in INPUT_PARAMS[6:]}
        consts = {"BLOCK_H": config.block_h, "BLOCK_W": config.block_w, "BLOCK_C": config.block_c}
    sig |= dict.fromkeys(scalar_params(config), "i32")
    sig |= {"out_ptr": ft, **dict.fromkeys(consts, "constexpr")}
    return sig, consts


def compile_ptx(cc: int, dtype: str = "fp32", config: KernelConfig | None = None) -> PtxKernel:
    """Compile the kernel for compute capability ``cc`` (e.g. 86 for 8.6) and ``dtype`` ("fp32" | "fp16")
    to PTX ISA 8.0 for the generic ``sm_<cc>`` target, without needing a GPU. ``config.layout="filter"``
    compiles the filter-stationary kernel (its parameters: the 12 inputs, 15 scalars, the output).

    In a process whose Triton was imported under ``TRITON_INTERPRET=1`` (Triton's own ``@jit`` library
    functions, which the kernel calls, are then interpreter objects the compiler cannot read: "Unsupported
    function referenced"), the compilation runs in a fresh Python process without that variable; the result
    is the same PTX.

    Raises ``ValueError`` for an unsupported ``cc``/``dtype`` and ``RuntimeError`` if the compiled kernel
    would need Triton scratch memory, several CTAs or arch-specific instructions.
    """
    if cc not in SUPPORTED_CC:
        raise ValueError(f"compute capability must be one of {SUPPORTED_CC}, got {cc!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    cfg = config or default_config(dtype)
    if _triton_interpreted():
        return _compile_in_subprocess(cc, dtype, cfg)
    return _compile(cc, dtype, cfg)


def _triton_interpreted() -> bool:
    """Whether Triton's language library was loaded for the interpreter (``TRITON_INTERPRET=1`` at import)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.standard._sum_combine, InterpretedFunction)


def _compile_in_subprocess(cc: int, dtype: str, cfg: KernelConfig) -> PtxKernel:
    """:func:`_compile` in a fresh interpreter without ``TRITON_INTERPRET``; the kernel's fields as JSON."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import dataclasses, json, sys; from metasr.kernels.ptx import _compile; from metasr.kernels.spec import "
        "KernelConfig; k = _compile(int(sys.argv[1]), sys.argv[2], KernelConfig(**json.loads(sys.argv[3]))); "
        "print(json.dumps(dataclasses.asdict(k)))"
    )
    args = [sys.executable, "-c", code, str(cc), dtype, json.dumps(dataclasses.asdict(cfg))]
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    if out.returncode:
        last = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
        raise RuntimeError(f"compiling the kernel's PTX in a separate process failed: {last}")
    fields = json.loads(out.stdout.strip().splitlines()[-1])
    fields["config"] = KernelConfig(**fields["config"])
    fields["params"] = tuple(fields["params"])
    return PtxKernel(**fields)


def _compile(cc: int, dtype: str, cfg: KernelConfig) -> PtxKernel:
    """Compile in this process (Triton not interpreted); see :func:`compile_ptx`."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from metasr.kernels import source, source_filter

    signature, constexprs = _signature(dtype, cfg)
    module = source_filter if cfg.layout == "filter" else source
    src = ASTSource(fn=module.jit(), signature=signature, constexprs=constexprs)
    compiled = triton.compile(
        src,
        target=GPUTarget("cuda", cc, 32),
        options={"num_warps": cfg.num_warps, "ptx_version": PTX_ISA, "enable_fp_fusion": True},
    )
    md = compiled.metadata
    ptx = compiled.asm["ptx"]
    scratch = int(getattr(md, "global_scratch_size", 0) or 0) + int(getattr(md, "profile_scratch_size", 0) or 0)
    if scratch:
        raise RuntimeError("the compiled kernel needs Triton scratch memory, which TensorRT does not provide")
    if getattr(md, "num_ctas", 1) != 1:
        raise RuntimeError(f"the compiled kernel uses {md.num_ctas} CTAs; TensorRT launches one")
    params = INPUT_PARAMS + scalar_params(cfg) + OUTPUT_PARAMS
    n_declared = len(params)
    if ptx_read_params(ptx, md.name) & {n_declared, n_declared + 1}:
        raise RuntimeError("the PTX reads Triton's hidden scratch parameters, which TensorRT passes as null")
    used = [ins for ins in _ARCH_SPECIFIC if re.search(rf"\b{re.escape(ins)}\b", ptx)]
    if used:
        raise RuntimeError(f"the PTX uses arch-specific instructions {used}; it cannot target generic sm_{cc}")
    ptx = re.sub(r"^\.target\s+sm_\d+a\b", f".target sm_{cc}", ptx, flags=re.M)  # generic, not sm_90a
    return PtxKernel(
        ptx=ptx,
        name=md.name,
        cc=cc,
        dtype=dtype,
        config=cfg,
        threads=md.num_warps * 32,
        shared_bytes=int(md.shared),
        params=params,
        ptx_version=f"{PTX_ISA // 10}.{PTX_ISA % 10}",
        target=f"sm_{cc}",
        scratch_bytes=scratch,
    )
