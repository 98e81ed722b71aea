import pytest
import torch
from metasr.runtime.projection import UnsupportedScaleError

from metasr.config import ModelConfig, preset
from metasr.model import MetaSR


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return MetaSR(preset("small")).eval()


def test_two_phase_api_is_stateless_and_matches_forward(small):
    lr = torch.rand(2, 3, 12, 15) * 255
    with torch.no_grad():
        feats = small.encode(lr)
        assert feats.shape == (2, 32, 12, 15)
        a = small.upscale(feats, 2.5)
        b = small.upscale(feats, 3.5)  # a second scale from the same features
        c = small(lr, 2.5)
    assert a.shape == (2, 3, 30, 37) and b.shape == (2, 3, 42, 52)
    assert torch.equal(a, c)
    assert a.dtype == torch.float32


def test_plan_can_be_passed_instead_of_a_scale(small):
    feats = torch.randn(1, 32, 8, 9)
    with torch.no_grad():
        assert torch.equal(small.upscale(feats, small.plan(8, 9, 1.7)), small.upscale(feats, 1.7))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), 4.5])
def test_bad_scale(small, bad):
    with pytest.raises(UnsupportedScaleError):
        small(torch.zeros(1, 3, 8, 8), bad)


def test_mean_shift_is_identity_plus_mean_and_trainable(small):
    x = torch.full((1, 3, 1, 1), 100.0)
    y = small.sub_mean(x).flatten()
    assert torch.allclose(y, 100.0 - 255 * torch.tensor([0.4488, 0.4371, 0.4040]))
    assert small.sub_mean.weight.requires_grad  # as in the official code (not frozen)


def test_config_validation():
    with pytest.raises(ValueError, match="3x3"):
        ModelConfig("edsr", kernel_size=5)
    with pytest.raises(ValueError, match="unknown backbone"):
        MetaSR(ModelConfig("nope"))
    with pytest.raises(ValueError, match="emits 64 channels"):
        MetaSR(ModelConfig("edsr", {"channels": 64, "n_blocks": 1}, features=32))
    assert ModelConfig.from_json(preset("rdn").to_json()) == preset("rdn")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda(small):
    m = MetaSR(preset("small")).cuda().eval()
    m.load_state_dict(small.state_dict())
    lr = torch.rand(1, 3, 16, 16) * 255
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # PyTorch's default TF32 convolutions move outputs by ~1e-2 (H200)
    try:
        with torch.no_grad():
            assert torch.allclose(m(lr.cuda(), 2.3).cpu(), small(lr, 2.3), atol=1e-2)
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def test_public_api_is_lazy_and_complete():
    import subprocess
    import sys

    import metasr

    for name in metasr.__all__:
        assert getattr(metasr, name) is not None
    code = "import sys, metasr, metasr.runtime; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
