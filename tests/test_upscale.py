"""The fast Meta-Upscale against the official formulation (tests/oracle.py)."""

import pytest
import torch
from oracle import oracle_upscale

from metasr.config import preset
from metasr.model import MetaSR
from metasr.upscale import meta_upscale

SCALES = [1.1, 1.5, 2.0, 2.3, 2.7, 3.0, 3.3, 3.7, 4.0]
# Measured: max |fast - oracle| <= 3e-4 on outputs of magnitude ~170 (float32 summation order differs).
TOL = 1e-3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MetaSR(preset("edsr-baseline")).eval()
    for p in m.P2W.parameters():  # larger than default init so outputs span ~+-200
        torch.nn.init.normal_(p, std=0.1)
    return m


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("size", [(24, 24), (19, 33)])
def test_fast_equals_oracle(model, scale, size):
    torch.manual_seed(1)
    feats = torch.randn(1, 64, *size) * 10
    with torch.no_grad():
        plan = model.plan(*size, scale)
        fast = meta_upscale(feats, model.P2W.table(plan, feats), plan, tile=None)
        ref = oracle_upscale(feats, model.P2W, scale)
    assert fast.shape == ref.shape == (1, 3, int(scale * size[0]), int(scale * size[1]))
    assert ref.abs().max() > 50  # the comparison is not between near-zero outputs
    assert (fast - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("scale", [1.1, 2.3, 3.7, 4.0])
def test_tiles_give_the_untiled_result(model, scale):
    torch.manual_seed(2)
    feats = torch.randn(2, 64, 21, 26) * 10  # batch of two as well
    with torch.no_grad():
        plan = model.plan(21, 26, scale)
        table = model.P2W.table(plan, feats)
        whole = meta_upscale(feats, table, plan, tile=None)
        tiled = meta_upscale(feats, table, plan, tile=10)  # several tiles along both axes
        ref = oracle_upscale(feats, model.P2W, scale)
    assert plan.out_size[0] > 2 * 10
    assert (tiled - whole).abs().max().item() <= TOL
    assert (tiled - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("scale", [2.3, 2.0, 2.5])  # grouped, convolution, convolution with 2-pixel blocks
def test_gradients_match_the_oracle(model, scale):
    torch.manual_seed(3)
    feats = (torch.randn(1, 64, 9, 11) * 10).requires_grad_()
    target = torch.randn(1, 3, int(scale * 9), int(scale * 11))

    def grads(fn):
        model.zero_grad()
        feats.grad = None
        torch.nn.functional.l1_loss(fn(), target).backward()
        return feats.grad.clone(), model.P2W.meta_block[2].weight.grad.clone()

    plan = model.plan(9, 11, scale)
    g_fast = grads(lambda: meta_upscale(feats, model.P2W.table(plan, feats), plan, tile=8))
    g_ref = grads(lambda: oracle_upscale(feats, model.P2W, scale))
    for a, b in zip(g_fast, g_ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


def test_full_model_matches_oracle_with_means():
    torch.manual_seed(4)
    m = MetaSR(preset("small")).eval()
    lr = torch.rand(1, 3, 17, 23) * 255
    with torch.no_grad():
        feats = m.encode(lr)
        ref = m.add_mean(oracle_upscale(feats, m.P2W, 2.7))
        out = m(lr, 2.7)
        out_tiled = m.upscale(feats, 2.7, tile=16)
    assert (out - ref).abs().max().item() <= TOL
    assert (out_tiled - ref).abs().max().item() <= TOL


def test_shape_mismatches_are_clear(model):
    feats = torch.randn(1, 64, 10, 10)
    plan = model.plan(12, 10, 2.0)
    with pytest.raises(ValueError, match="plan is for a 12x10 input"):
        meta_upscale(feats, model.P2W.table(plan, feats), plan)


@pytest.mark.parametrize("scale", [1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
def test_convolution_path_equals_the_grouped_path(model, scale):
    """The plans one convolution computes (one group per axis) against the grouped path (conv=False); measured
    max |diff| <= 1.7e-5 on outputs ~100 (float32 summation order)."""
    from metasr.upscale_conv import conv_layout

    torch.manual_seed(5)
    feats = torch.randn(2, 64, 23, 18) * 10
    with torch.no_grad():
        plan = model.plan(23, 18, scale)
        table = model.P2W.table(plan, feats)
        assert conv_layout(plan) is not None
        conv = meta_upscale(feats, table, plan)
        grouped = meta_upscale(feats, table, plan, conv=False)
    assert (conv - grouped).abs().max().item() <= TOL
