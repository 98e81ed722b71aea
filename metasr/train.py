"""Training: the paper's recipe (L1 on the 0..255 scale, Adam, step decay, one scale per batch)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from metasr.checkpoint import load_model, save_model
from metasr.config import preset
from metasr.data import TRAIN_SCALES, PairCache, TrainSampler, check_images, list_images
from metasr.limits import MAX_SCALE, MAX_SEED, check_float, check_int, check_threads
from metasr.model import MetaSR
from metasr.progress import Progress

__all__ = ["TrainConfig", "apply_overrides", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper's recipe (16 x 50x50 patches, Adam 1e-4 halved every
    200k iterations, 1M iterations); override any field from the command line (``--set lr=5e-4``)."""

    train_dirs: tuple[str, ...] = ()
    val_dir: str | None = None
    preset: str = "small"
    scales: tuple[float, ...] = TRAIN_SCALES
    val_scales: tuple[float, ...] = (2.0, 3.0, 4.0)
    batch: int = 16
    patch: int = 50
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    lr_step: int = 200_000
    lr_gamma: float = 0.5
    iterations: int = 1_000_000
    val_every: int = 1000
    save_every: int = 1000
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # 0: torch's default
    out_dir: str = "runs/train"
    cache_dir: str = ".cache/metasr"
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, low, high in _INT_RANGES:
            check_int(getattr(self, name), name, low, high)
        check_float(self.lr, "lr", 0.0, 1.0, low_open=True)
        check_float(self.lr_gamma, "lr_gamma", 0.0, 1.0, low_open=True)
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas}")
        for beta in self.betas:
            check_float(beta, "betas", 0.0, 0.999999)
        check_threads(self.threads)
        for name in ("scales", "val_scales"):
            values = getattr(self, name)
            if not 1 <= len(values) <= 1000:
                raise ValueError(f"{name} needs 1..1000 scales, got {len(values)}")
            for v in values:
                check_float(v, f"{name} entries", 1.0, MAX_SCALE, low_open=True)


# (field, low, high): a batch of 1024 50x50 patches or a 1024-pixel patch is far beyond one machine's memory
_INT_RANGES = (
    ("batch", 1, 1024),
    ("patch", 8, 1024),
    ("lr_step", 1, 10**9),
    ("iterations", 1, 10**9),
    ("val_every", 1, 10**9),
    ("save_every", 1, 10**9),
    ("seed", 0, MAX_SEED),
)


def _parse(value: str, annotation: str) -> object:
    if annotation in ("int",):
        return int(value)
    if annotation in ("float",):
        return float(value)
    if annotation == "str":
        return value
    if annotation == "str | None":
        return None if value.lower() in ("", "none") else value
    if annotation.startswith("tuple[float"):
        return tuple(float(v) for v in value.split(",") if v)
    if annotation.startswith("tuple[str"):
        return tuple(v for v in value.split(",") if v)
    raise TypeError(f"cannot set a field of type {annotation} from the command line")


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Apply ``key=value`` overrides with the field's type (tuples comma-separated)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, object] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"bad override {item!r}: expected key=value with key in {sorted(fields)}")
        try:
            changes[key] = _parse(value, str(fields[key].type))
        except ValueError:
            raise ValueError(f"--set {key}: {value!r} is not a {fields[key].type}") from None
        except TypeError as e:
            raise ValueError(f"--set {key}: {e}") from None
    return dataclasses.replace(config, **changes)


def _record_line(record: dict, iterations: int) -> str:
    """One log record as a plain line: ``iteration 200/1000  loss 4.512  lr 1e-04  31.0 s  val 30.12 dB``."""
    line = f"iteration {record['iteration']}/{iterations}  loss {record['loss']:.3f}  lr {record['lr']:.0e}  "
    line += f"{record['seconds']:.1f} s"
    return line + (f"  val {record['val_mean']:.2f} dB" if "val_mean" in record else "")


def _validate(model: MetaSR, val_paths: list[Path], scales: Sequence[float], cache_dir: Path) -> dict[str, float]:
    from metasr.evaluate import evaluate_model  # local: evaluate imports train-free modules only

    rows = evaluate_model(model, val_paths, scales, cache_dir=cache_dir, convention="auto", with_ssim=False)
    return {f"x{s:g}": float(np.mean([r.psnr for r in rows if r.scale == s])) for s in scales}


def train(config: TrainConfig, resume: bool = False, on_log: Callable[[dict], None] | None = None) -> Path:
    """Train and return the path of the last checkpoint (``out_dir/last.safetensors``).

    Writes ``config.json``, ``log.jsonl``, ``last.safetensors`` (+ ``last.state.pt`` for resuming) and
    ``best.safetensors`` (best mean validation PSNR) under ``out_dir``.
    """
    paths = [p for d in config.train_dirs for p in list_images(d)]
    val_paths = list_images(config.val_dir) if config.val_dir else []
    check_images(paths + val_paths)  # before anything is written
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    sampler = TrainSampler(
        paths, PairCache(Path(config.cache_dir)), config.scales, config.batch, config.patch, config.seed
    )
    model = MetaSR(preset(config.preset)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_step, gamma=config.lr_gamma)
    start, best = 0, -math.inf
    state_path = out / "last.state.pt"
    if resume and state_path.is_file():
        model.load_state_dict(load_model(out / "last.safetensors").state_dict())
        state = torch.load(state_path, map_location=device, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sampler.rng.bit_generator.state = json.loads(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        start, best = int(state["iteration"]), float(state["best"])
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    log = (out / "log.jsonl").open("a")
    batches = iter(sampler)
    bar = Progress(range(start, config.iterations), "train", unit="it", total=config.iterations, initial=start)
    running, t0, pixels = 0.0, time.perf_counter(), 0
    model.train()
    for it in bar:
        scale, lr_np, hr_np = next(batches)
        lr_t, hr_t = torch.from_numpy(lr_np).to(device), torch.from_numpy(hr_np).to(device)
        loss = torch.nn.functional.l1_loss(model(lr_t, scale, tile=None), hr_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if it > start else loss.item()
        pixels += hr_np.shape[0] * hr_np.shape[2] * hr_np.shape[3]
        step = it + 1
        if step % 20 == 0:
            rate = pixels / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{running:.3f}", x=f"{scale:.1f}", hr_px_s=f"{rate:,.0f}")
        record: dict = {}
        if val_paths and (step % config.val_every == 0 or step == config.iterations):
            model.eval()
            with torch.no_grad():
                psnr = _validate(model, val_paths, config.val_scales, Path(config.cache_dir))
            model.train()
            mean = float(np.mean(list(psnr.values())))
            record = {"val_psnr": psnr, "val_mean": mean}
            if mean > best:
                best = mean
                save_model(model, out / "best.safetensors", {"iteration": str(step)})
        if step % config.save_every == 0 or step == config.iterations:
            save_model(model, out / "last.safetensors", {"iteration": str(step)})
            torch.save(
                {
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "sampler_rng": json.dumps(sampler.rng.bit_generator.state),
                    "torch_rng": torch.get_rng_state(),
                    "iteration": step,
                    "best": best,
                },
                state_path,
            )
        if record or step % 100 == 0:
            record.update(
                iteration=step, loss=running, lr=sched.get_last_lr()[0], seconds=round(time.perf_counter() - t0, 1)
            )
            log.write(json.dumps(record) + "\n")
            log.flush()
            if not bar.active:  # a pipe or a CI log: a plain line per record instead of a redrawn bar
                bar.write(_record_line(record, config.iterations))
            if on_log is not None:
                on_log(record)
    log.close()
    return out / "last.safetensors"
