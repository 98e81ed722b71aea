"""The MetaUpscale Triton kernel: interpreted on the CPU against the grouped PyTorch path, its PTX compiled
for several GPUs without one, and (on a CUDA machine) the compiled kernel, its PTX through the driver, and
the model's CUDA path."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="the kernel tests need Triton (pip install 'metasr[triton]')")

from metasr.runtime.projection import project

from metasr.kernels import KernelConfig, compile_ptx, meta_upscale_triton
from metasr.kernels.ptx import ptx_entry_params, ptx_read_params
from metasr.kernels.spec import INPUT_PARAMS, PARAMS, SCALAR_PARAMS
from metasr.upscale import meta_upscale

# Measured (interpreter, float32): max |kernel - grouped| <= 1.4e-6 of the output's largest magnitude
# (summation order differs); the bound is 1e-5 relative.
REL_FP32 = 1e-5
# float16 inputs: the kernel rounds its float32 sums to float16 once (relative step 2**-11 = 4.9e-4); the
# reference runs the same float16 values in float32. Measured max error / max |out|: 3.2e-4.
REL_FP16 = 1e-3

CUDA = torch.cuda.is_available()
# The interpreter's cost is per program and per channel step, not per pixel: big tiles keep the CPU tests
# fast. The default (GPU) block shape runs in test_default_block_shape and test_partial_blocks_in_both_axes.
INTERP = KernelConfig(block_h=8, block_w=32, block_c=16, num_warps=4)


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _problem(n, c, h, w, scale, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    plan = project(h, w, scale)
    pr, pc = plan.rows.offsets.size, plan.cols.offsets.size
    feats = torch.randn(n, c, h, w, generator=g) * 10
    weights = torch.randn(pr, pc, 27 * c, generator=g) * 0.05
    idx = [torch.from_numpy(a.astype(np.int64)) for a in (plan.rows.src, plan.rows.offset_index, plan.cols.src,
                                                           plan.cols.offset_index)]  # fmt: skip
    return plan, feats.to(device, dtype), weights.to(device, dtype), [t.to(device) for t in idx]


def _reference(plan, feats, weights):
    """The grouped PyTorch path in float32 on the CPU (the yardstick)."""
    pr, pc, k = weights.shape
    return meta_upscale(feats.float().cpu(), weights.float().cpu().view(pr, pc, k // 3, 3), plan, tile=None)


def _rel_err(out, ref):
    out, ref = out.float().cpu(), ref.float().cpu()
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "scale"),
    [
        (2, 32, 13, 17, 2.3),  # batch of two, non-square, an exception-row scale
        (1, 64, 9, 11, 3.7),
        (1, 64, 10, 10, 4.0),  # integer scale: 16 pairs
        (1, 32, 7, 9, 1.1),  # near-identity: 11x11 pairs on a 7x9 map (every pixel a border pixel)
        (1, 20, 6, 5, 2.0),  # C not a multiple of the channel chunk
    ],
)
def test_interpreted_kernel_equals_grouped_path(interpret, n, c, h, w, scale):
    plan, feats, weights, idx = _problem(n, c, h, w, scale)
    out = meta_upscale_triton(feats, weights, *idx, config=INTERP)
    ref = _reference(plan, feats, weights)
    assert out.shape == ref.shape == (n, 3, int(scale * h), int(scale * w))
    assert ref.abs().max() > 10
    assert _rel_err(out, ref) <= REL_FP32


def test_partial_blocks_in_both_axes(interpret):
    # 23 x 26 output pixels in 4 x 8 blocks: the last block row and column are partial
    plan, feats, weights, idx = _problem(1, 32, 8, 9, 2.9)
    out = meta_upscale_triton(feats, weights, *idx, config=KernelConfig(block_h=4, block_w=8, block_c=8, num_warps=1))
    assert out.shape[2] % 4 and out.shape[3] % 8
    assert _rel_err(out, _reference(plan, feats, weights)) <= REL_FP32


def test_default_block_shape(interpret):
    plan, feats, weights, idx = _problem(1, 32, 6, 7, 3.7)  # 22 x 25 outputs: partial 4 x 32 blocks
    out = meta_upscale_triton(feats, weights, *idx)
    assert _rel_err(out, _reference(plan, feats, weights)) <= REL_FP32


def test_tiles_equal_the_untiled_output(interpret):
    _, feats, weights, (rs, ri, cs, ci) = _problem(1, 32, 11, 13, 3.3)
    whole = meta_upscale_triton(feats, weights, rs, ri, cs, ci, config=INTERP)
    rows, cols = slice(7, 30), slice(12, 41)
    tile = meta_upscale_triton(feats, weights, rs[rows], ri[rows], cs[cols], ci[cols], config=INTERP)
    assert torch.equal(tile, whole[:, :, rows, cols])  # every pixel is computed independently: bit-identical


def test_float16(interpret):
    plan, feats, weights, idx = _problem(1, 64, 9, 10, 2.5, dtype=torch.float16)
    out = meta_upscale_triton(feats, weights, *idx, config=INTERP)
    assert out.dtype == torch.float16
    assert _rel_err(out, _reference(plan, feats, weights)) <= REL_FP16


def test_real_features_of_the_bundled_model(interpret):
    from conftest import data_path
    from PIL import Image

    from metasr.bundled import bundled_model_path
    from metasr.checkpoint import load_model

    model = load_model(bundled_model_path())
    img = np.asarray(Image.open(data_path("Set5", "butterfly.png")).convert("RGB"))[100:118, 60:82]
    with torch.no_grad():
        feats = model.encode(torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None])
        plan = model.plan(*feats.shape[2:], 3.3)
        table = model.P2W.table(plan, feats)
        ref = meta_upscale(feats, table, plan, tile=None)
        axes = (plan.rows.src, plan.rows.offset_index, plan.cols.src, plan.cols.offset_index)
        idx = [torch.from_numpy(a) for a in axes]
        out = meta_upscale_triton(feats, table.reshape(*table.shape[:2], -1), *idx, config=INTERP)
    assert _rel_err(out, ref) <= REL_FP32


def test_contract_violations_are_clear(interpret):
    _, feats, weights, (rs, ri, cs, ci) = _problem(1, 32, 6, 6, 2.0)
    with pytest.raises(ValueError, match="row_src must lie in"):
        meta_upscale_triton(feats, weights, rs + 6, ri, cs, ci)
    with pytest.raises(ValueError, match="weights must be"):
        meta_upscale_triton(feats, weights[..., :-1], rs, ri, cs, ci)
    with pytest.raises(ValueError, match="col_idx must be int64"):
        meta_upscale_triton(feats, weights, rs, ri, cs, ci.int())


def test_out_of_range_indices_are_clamped_never_read_outside(interpret):
    """What TensorRT's plugin gets from trtexec's random inputs: garbage index vectors. The kernel clamps them
    (no host check runs there), so the result is that of the clamped indices, with no out-of-bounds read."""
    from metasr.kernels.launch import _launch

    _, feats, weights, (rs, ri, cs, ci) = _problem(1, 32, 6, 7, 2.3)
    g = torch.Generator().manual_seed(5)
    bad = [torch.randint(-(2**40), 2**40, t.shape, generator=g) for t in (rs, ri, cs, ci)]
    limits = (6, weights.shape[0], 7, weights.shape[1])
    clamped = [b.clamp(0, n - 1) for b, n in zip(bad, limits, strict=True)]
    out = _launch(feats, weights, *bad, INTERP)
    assert torch.equal(out, _launch(feats, weights, *clamped, INTERP))
    assert torch.isfinite(out).all()


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    from metasr.kernels import KernelUnavailableError

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _, feats, weights, idx = _problem(1, 32, 6, 6, 2.0)
    with pytest.raises(KernelUnavailableError, match="TRITON_INTERPRET=1"):
        meta_upscale_triton(feats, weights, *idx)


# -- the filter-stationary kernel (behind a flag) ---------------------------------------------------------------

FILTER = KernelConfig(block_h=4, block_w=4, block_c=16, num_warps=4, layout="filter")


def _hints(plan, device="cpu"):
    from metasr.runtime.feeds import HINT_NAMES, plan_feeds

    feeds = plan_feeds(plan)
    return [torch.from_numpy(feeds[k]).to(device) for k in HINT_NAMES]


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "scale"),
    [
        (2, 20, 6, 7, 2.5),  # batch of two, 2-pixel blocks, C not a multiple of the channel chunk
        (1, 16, 4, 5, 2.3),  # float32 exception rows merged into their phase's group: 10 x 5 group pairs
        (1, 32, 5, 6, 4.0),  # one group per axis
    ],
)
def test_interpreted_filter_kernel_equals_grouped_path(interpret, n, c, h, w, scale):
    from metasr.kernels import meta_upscale_triton_filter

    plan, feats, weights, idx = _problem(n, c, h, w, scale)
    out = meta_upscale_triton_filter(feats, weights, *idx, *_hints(plan), config=FILTER)
    ref = _reference(plan, feats, weights)
    assert out.shape == ref.shape and ref.abs().max() > 10
    # measured (interpreter, float32, IEEE products): <= 7.1e-7 of the output's largest magnitude
    assert _rel_err(out, ref) <= REL_FP32


def test_filter_kernel_refuses_bad_hints(interpret):
    from metasr.kernels import meta_upscale_triton_filter

    plan, feats, weights, idx = _problem(1, 16, 4, 5, 2.0)
    hints = _hints(plan)
    with pytest.raises(ValueError, match="row_groups must be int64 of rank 3"):
        meta_upscale_triton_filter(feats, weights, *idx, hints[0][..., 0], *hints[1:], config=FILTER)
    with pytest.raises(ValueError, match="col_slots must lie in"):
        meta_upscale_triton_filter(feats, weights, *idx, *hints[:4], hints[4] + 100, hints[5], config=FILTER)
    with pytest.raises(ValueError, match="layout='filter'"):
        meta_upscale_triton_filter(feats, weights, *idx, *hints, config=INTERP)


def test_filter_kernel_ptx(tmp_path):
    from metasr.kernels.spec import FILTER_SCALAR_PARAMS, default_config

    n_in, n_sc = len(INPUT_PARAMS), len(FILTER_SCALAR_PARAMS)
    for cc, dtype in ((80, "fp32"), (90, "fp16")):
        k = compile_ptx(cc, dtype, default_config(dtype, "filter"))
        assert ".version 8.0" in k.ptx.splitlines() and f".target sm_{cc}" in k.ptx.splitlines()
        assert k.params == INPUT_PARAMS + FILTER_SCALAR_PARAMS + ("out",)
        assert ptx_entry_params(k.ptx, k.name) == [".u64"] * n_in + [".u32"] * n_sc + [".u64"] * 3
        assert max(ptx_read_params(k.ptx, k.name)) == n_in + n_sc  # the output; never the scratch pointers
        if shutil.which("ptxas"):
            src = tmp_path / f"f{cc}{dtype}.ptx"
            src.write_text(k.ptx)
            res = subprocess.run(["ptxas", f"-arch=sm_{cc}", str(src), "-o", str(tmp_path / "f.cubin")],
                                 capture_output=True, text=True)  # fmt: skip
            assert res.returncode == 0, res.stderr


# -- PTX without a GPU -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ptx_kernels():
    pairs = [(cc, "fp32") for cc in (80, 86, 87, 89, 90)] + [(80, "fp16"), (90, "fp16")]
    return {(cc, dt): compile_ptx(cc, dt) for cc, dt in pairs}


def test_ptx_targets_isa_and_parameter_order(ptx_kernels):
    n_in, n_sc = len(INPUT_PARAMS), len(SCALAR_PARAMS)
    for (cc, dtype), k in ptx_kernels.items():
        lines = k.ptx.splitlines()
        assert ".version 8.0" in lines, (cc, dtype)
        assert f".target sm_{cc}" in lines, (cc, dtype)  # generic: never sm_90a
        assert k.params == PARAMS and len(PARAMS) == 20
        # 12 input pointers, 7 int32 scalars, the output pointer, then Triton's two hidden scratch pointers
        assert ptx_entry_params(k.ptx, k.name) == [".u64"] * n_in + [".u32"] * n_sc + [".u64"] + [".u64"] * 2
        read = ptx_read_params(k.ptx, k.name)
        assert read == set(range(6)) | set(range(n_in, n_in + n_sc + 1)), (cc, dtype, sorted(read))
        assert k.scratch_bytes == 0 and k.shared_bytes >= 0
        assert k.threads == k.config.num_warps * 32
        assert f".reqntid {k.threads}" in k.ptx or f".maxntid {k.threads}" in k.ptx


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas (CUDA toolkit) not on PATH")
def test_ptx_assembles_for_its_target(ptx_kernels, tmp_path):
    for (cc, dtype), k in ptx_kernels.items():
        src = tmp_path / f"k{cc}{dtype}.ptx"
        src.write_text(k.ptx)
        res = subprocess.run(["ptxas", f"-arch=sm_{cc}", str(src), "-o", str(tmp_path / "k.cubin")],
                             capture_output=True, text=True)  # fmt: skip
        assert res.returncode == 0, (cc, dtype, res.stderr)


def test_compile_ptx_rejects_bad_arguments():
    with pytest.raises(ValueError, match="compute capability"):
        compile_ptx(61)
    with pytest.raises(ValueError, match="dtype"):
        compile_ptx(80, "bf16")


# -- on a CUDA GPU ---------------------------------------------------------------------------------------

gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@gpu
@pytest.mark.parametrize("scale", [1.1, 2.0, 2.3, 3.3, 3.7, 4.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_kernel_equals_grouped_path(scale, dtype):
    plan, feats, weights, idx = _problem(2, 64, 37, 53, scale, dtype=dtype, device="cuda")
    out = meta_upscale_triton(feats, weights, *idx)
    assert _rel_err(out, _reference(plan, feats, weights)) <= (REL_FP32 if dtype == torch.float32 else REL_FP16)


@gpu
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_ptx_through_the_driver_equals_the_kernel(dtype):
    pytest.importorskip("cuda.bindings", reason="needs cuda-bindings")
    from metasr.kernels.ptx_launch import launch_ptx

    cc = 10 * torch.cuda.get_device_capability()[0] + torch.cuda.get_device_capability()[1]
    tdt = torch.float32 if dtype == "fp32" else torch.float16
    _, feats, weights, idx = _problem(2, 64, 29, 31, 3.3, dtype=tdt, device="cuda")
    out = launch_ptx(compile_ptx(cc, dtype), feats, weights, *idx)
    torch.cuda.synchronize()
    jit = meta_upscale_triton(feats, weights, *idx)
    print(f"PTX via driver vs JIT kernel ({dtype}): equal={torch.equal(out, jit)}, max rel {_rel_err(out, jit)}")
    assert _rel_err(out, jit) <= (1e-6 if dtype == "fp32" else REL_FP16)


@pytest.fixture
def no_tf32():
    """PyTorch's CUDA convolutions default to TF32 (torch.backends.cudnn.allow_tf32): their features then differ
    from the CPU's by ~1e-3 relative and outputs by ~1e-2 on 0..255 (measured on an H200), which says nothing
    about this project's code. The comparisons with the CPU run in full float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@gpu
def test_model_cuda_path_uses_the_kernel_and_matches(no_tf32):
    from metasr.config import preset
    from metasr.model import MetaSR

    torch.manual_seed(0)
    m = MetaSR(preset("small")).eval()
    lr = torch.rand(1, 3, 40, 44) * 255
    with torch.no_grad():
        ref = m(lr, 2.7)
        mc = m.cuda()
        feats = mc.encode(lr.cuda())
        fast = mc.upscale(feats, 2.7)  # auto: the kernel
        grouped = mc.upscale(feats, 2.7, impl="grouped")
    assert _rel_err(fast, ref) <= 1e-5
    assert _rel_err(fast, grouped) <= REL_FP32


@gpu
def test_torch_compile_sees_one_cuda_op():
    _, feats, weights, idx = _problem(1, 64, 20, 24, 2.3, device="cuda")
    fn = torch.compile(lambda *a: torch.ops.metasr.meta_upscale(*a) * 1.0, fullgraph=True)
    import metasr.kernels.torch_op  # noqa: F401  (registers torch.ops.metasr.meta_upscale)

    with torch.no_grad():
        assert torch.allclose(fn(feats, weights, *idx), meta_upscale_triton(feats, weights, *idx))


@gpu
@pytest.mark.parametrize("scale", [1.5, 2.0, 2.3, 3.3, 3.7, 4.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_filter_kernel_equals_grouped_path(scale, dtype):
    from metasr.kernels import meta_upscale_triton_filter

    plan, feats, weights, idx = _problem(2, 64, 37, 53, scale, dtype=dtype, device="cuda")
    out = meta_upscale_triton_filter(feats, weights, *idx, *_hints(plan, "cuda"))
    assert _rel_err(out, _reference(plan, feats, weights)) <= (REL_FP32 if dtype == torch.float32 else REL_FP16)
