import collections

import pytest
import torch

from metasr.checkpoint import CheckpointError, load_model, official_state_dict, read_metadata, save_model
from metasr.config import PRESETS, preset
from metasr.model import MetaSR


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_safetensors_round_trip_every_preset(tmp_path, name):
    torch.manual_seed(0)
    model = MetaSR(preset(name))
    path = save_model(model, tmp_path / f"{name}.safetensors")
    loaded = load_model(path)
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert not loaded.training


def test_official_rdn_layout_loads_and_has_the_official_size(tmp_path):
    model = MetaSR(preset("rdn"))
    state = official_state_dict(model)
    assert sum(v.numel() for v in state.values()) == 22_419_096
    keys = list(state)
    assert keys[:4] == ["sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"]
    assert "RDBs.15.convs.7.conv.0.weight" in state and "GFF.1.bias" in state
    assert state["P2W.meta_block.0.weight"].shape == (256, 3)
    assert state["P2W.meta_block.2.weight"].shape == (1728, 256)
    # mean shifts are trained values in the official checkpoint: loaded values must win
    state["sub_mean.bias"] = torch.tensor([-110.0, -111.0, -102.0])
    torch.save(state, tmp_path / "model_1000.pt")
    loaded = load_model(tmp_path / "model_1000.pt")
    assert torch.equal(loaded.sub_mean.bias, state["sub_mean.bias"])


def _official(tmp_path, edit):
    state = collections.OrderedDict(official_state_dict(MetaSR(preset("rdn"))))
    edit(state)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    return path


def test_missing_key_is_named(tmp_path):
    path = _official(tmp_path, lambda s: s.pop("GFF.0.weight"))
    with pytest.raises(CheckpointError, match=r"1 missing: GFF\.0\.weight"):
        load_model(path)


def test_extra_key_is_named(tmp_path):
    path = _official(tmp_path, lambda s: s.update({"tail.0.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"1 unexpected: tail\.0\.weight"):
        load_model(path)


def test_misshaped_key_is_named_with_both_shapes(tmp_path):
    path = _official(tmp_path, lambda s: s.update({"P2W.meta_block.2.weight": torch.zeros(864, 256)}))
    with pytest.raises(CheckpointError, match=r"misshaped: P2W\.meta_block\.2\.weight \(expected \(1728, 256\), got"):
        load_model(path)


def test_wrong_architecture_lists_only_the_first_offenders(tmp_path):
    torch.save(official_state_dict(MetaSR(preset("small"))), tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match=r"missing: .* and \d+ more"):
        load_model(tmp_path / "small.pt")  # defaults to the official RDN config
    assert load_model(tmp_path / "small.pt", "small").config.name == "small"


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_never_executed(tmp_path, capsys):
    torch.save({"x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model(tmp_path / "evil.pt")
    assert "pickled code ran" not in capsys.readouterr().out


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(tmp_path / "absent.pt")


def test_metadata_carries_the_config(tmp_path):
    path = save_model(MetaSR(preset("small")), tmp_path / "m.safetensors", {"iteration": "7"})
    meta = read_metadata(path)
    assert meta["iteration"] == "7" and '"backbone": "edsr"' in meta["config"]
