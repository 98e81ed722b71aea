"""A tiny model trains for a few steps on the CPU and is evaluated end to end."""

import json
import math

import numpy as np
from conftest import data_path

from metasr.checkpoint import load_model
from metasr.cli import main
from metasr.config import ModelConfig
from metasr.data import PairCache, TrainSampler, list_images
from metasr.train import TrainConfig, apply_overrides, train


def test_sampler_follows_the_paper(tmp_path):
    paths = list_images(data_path("Set5"))
    sampler = TrainSampler(paths, PairCache(tmp_path), scales=(2.3, 3.7), batch=4, patch=20, seed=1)
    for _, (scale, lr, hr) in zip(range(4), sampler, strict=False):
        assert scale in (2.3, 3.7)
        assert lr.shape == (4, 3, 20, 20) and lr.dtype == np.float32
        assert hr.shape == (4, 3, int(scale * 20), int(scale * 20))
        assert 0 <= lr.min() and lr.max() <= 255


def test_overrides_are_typed():
    cfg = apply_overrides(TrainConfig(), ["lr=5e-4", "iterations=10", "val_scales=2,3.5", "val_dir=none"])
    assert cfg.lr == 5e-4 and cfg.iterations == 10 and cfg.val_scales == (2.0, 3.5) and cfg.val_dir is None


def test_train_resume_and_eval(tmp_path, monkeypatch):
    import metasr.config as config

    tiny = ModelConfig("edsr", {"channels": 8, "n_blocks": 1}, features=8, hidden=16, name="tiny")
    monkeypatch.setitem(config.PRESETS, "tiny", tiny)
    cfg = TrainConfig(
        train_dirs=(str(data_path("Set5")),),
        val_dir=str(data_path("Set5")),
        preset="tiny",
        batch=2,
        patch=16,
        iterations=6,
        val_every=3,
        save_every=3,
        lr=1e-3,
        val_scales=(2.0,),
        out_dir=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"),
    )
    last = train(cfg)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log if "val_psnr" in r] == [3, 6]
    assert all(math.isfinite(r["loss"]) for r in log)
    # resume continues from iteration 6 to 8
    train(apply_overrides(cfg, ["iterations=8"]), resume=True)
    assert load_model(last).config.name == "tiny"
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--model",
            str(last),
            "--data",
            str(data_path("Set5")),
            "--scales",
            "2",
            "3",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    methods = {m["method"] for m in report["means"]}
    assert methods == {"model", "bicubic"}
    assert (out / "report.csv").read_text().count("\n") == 1 + 5 * 2 * 2


def test_training_is_deterministic_with_a_seed(tmp_path, monkeypatch):
    import metasr.config as config

    tiny = ModelConfig("edsr", {"channels": 8, "n_blocks": 1}, features=8, hidden=16, name="tiny")
    monkeypatch.setitem(config.PRESETS, "tiny", tiny)
    runs = []
    for k in range(2):
        cfg = TrainConfig(
            train_dirs=(str(data_path("Set5")),),
            preset="tiny",
            batch=2,
            patch=16,
            iterations=4,
            save_every=4,
            lr=1e-3,
            seed=7,
            out_dir=str(tmp_path / f"run{k}"),
            cache_dir=str(tmp_path / "cache"),
        )
        runs.append(load_model(train(cfg)).state_dict())
    assert all(np.array_equal(runs[0][k].numpy(), runs[1][k].numpy()) for k in runs[0])


def test_table1_report_with_plot(tmp_path, monkeypatch):
    import metasr.config as config

    tiny = ModelConfig("edsr", {"channels": 8, "n_blocks": 1}, features=8, hidden=16, name="tiny")
    monkeypatch.setitem(config.PRESETS, "tiny", tiny)
    from metasr.checkpoint import save_model
    from metasr.model import MetaSR

    ckpt = save_model(MetaSR(tiny), tmp_path / "tiny.safetensors")
    out = tmp_path / "t1"
    assert (
        main(
            [
                "eval",
                "--model",
                str(ckpt),
                "--data",
                str(data_path("Set5")),
                "--layout",
                "table1",
                "--scales",
                "1.5",
                "2.5",
                "--out",
                str(out),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    md = (out / "report.md").read_text()
    assert "| bicubic |" in md and "| model |" in md and "x1.5" in md and "x2.5" in md
    png = out / "psnr_vs_scale_Set5.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_train(tmp_path, monkeypatch, capsys):
    import metasr.config as config

    tiny = ModelConfig("edsr", {"channels": 8, "n_blocks": 1}, features=8, hidden=16, name="tiny")
    monkeypatch.setitem(config.PRESETS, "tiny", tiny)
    out = tmp_path / "run"
    args = ["train", "--train-dir", str(data_path("Set5")), "--preset", "tiny", "--out", str(out)]
    args += ["--set", "iterations=2", "--set", "batch=2", "--set", "patch=16", "--set", f"cache_dir={tmp_path / 'c'}"]
    assert main(args) == 0
    assert (out / "last.safetensors").is_file() and json.loads((out / "config.json").read_text())["iterations"] == 2
    capsys.readouterr()  # the progress bar
    assert main(["train", "--preset", "tiny", "--out", str(out)]) == 2  # no --train-dir
    assert main(["train", "--train-dir", str(tmp_path), "--set", "nope=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("metasr: error: ") for e in err)
    # a bad file among the training images: named at once, before anything is written
    bad = tmp_path / "images"
    bad.mkdir()
    (bad / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["train", "--train-dir", str(bad), "--preset", "tiny", "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.png is not a readable image" in err[0] and not (tmp_path / "run2").exists()
    # the same among the validation images (first read at the first validation, hours in)
    good = ["--train-dir", str(data_path("Set5")), "--preset", "tiny", "--out", str(tmp_path / "run3")]
    assert main(["train", *good, "--val-dir", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.png is not a readable image" in err[0] and not (tmp_path / "run3").exists()
