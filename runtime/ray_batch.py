"""``metasr upscale --engine ray``: the local engine's jobs run as a Ray Data pipeline (the ``serve`` extra).

    checked = check_jobs(plan_jobs(inputs, out), pipeline, opts)        # on the driver: every input, first
    todo, done = split_complete(checked, opts)                           # resume: complete outputs are skipped
    for result in run_ray_jobs(todo, RayJobConfig(artifacts, workers=4), opts):
        print(result.target)                                             # streamed as the outputs are written

The jobs are the local engine's (:mod:`metasr.runtime.batch`): same output names and formats, same checks,
made before Ray starts. Each job is one row of a dataset; an actor pool of ``workers`` actors, each holding
one :class:`Pipeline` with ONNX Runtime threads = its CPUs, reads the input file, upscales it and writes the
output atomically with :func:`~metasr.runtime.batch.run_job`, so outputs are byte-identical to the local
engine's. Rows stream: at most a few jobs are in flight per actor, each under ``opts.memory_mb``, so the job's
memory is about ``workers * memory_mb`` plus Ray's own processes, whatever the number of images.

Failures: an actor that dies (killed, out of memory, a lost node) is restarted (no limit: deaths spread over a
long run are not the jobs' fault) and its job retried, at most :data:`MAX_ATTEMPTS` - 1 times per job (Ray
Data's default, ``max_task_retries=-1``, retried for ever: a job that kills its worker every time, such as an
input that crashes a decoder, never ended the run); past that the run stops with one line
(:class:`ImageError`), the outputs written so far complete, and a re-run resumes. The retry's atomic write
replaces nothing partial (a killed writer's temporary is removed by the next write of that output), so each
output is written once, whole. An error inside a job (an input changed since it was checked) stops the run
with that job's one-line message.
Resume: :func:`split_complete` counts an output as complete when it exists, decodes fully and has exactly the
expected size (this engine's writes are atomic, so it never leaves a partial file under an output's name; a
file cut short by something else fails the decode and is written again).
"""

from __future__ import annotations

import math
import os
import pickle
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from metasr.runtime.batch import CheckedJob, UpscaleOptions, run_job
from metasr.runtime.image_io import ImageError
from metasr.runtime.projection import output_size
from PIL import Image

__all__ = ["MAX_ATTEMPTS", "JobResult", "RayJobConfig", "expected_size", "run_ray_jobs", "split_complete"]

MAX_ATTEMPTS = 4  # runs of one job whose worker dies before the run stops


@dataclass(frozen=True)
class RayJobConfig:
    """The graphs every actor loads, the pool (``workers`` actors of ``cpus_per_worker`` CPUs: ORT threads;
    ``workers=0``: one per CPU of the cluster, at most one per job), the cluster (None: embedded Ray) and the
    graph form (``Pipeline``'s ``graph``: "two" or "portable")."""

    artifacts: str
    backend: str = "ort"
    precision: str = "fp32"
    workers: int = 0
    cpus_per_worker: float = 1.0
    address: str | None = None
    graph: str = "two"

    def __post_init__(self) -> None:
        if not (isinstance(self.workers, int) and 0 <= self.workers <= 4096):
            raise ValueError(f"workers must be an integer in 0..4096, got {self.workers!r}")
        if not (math.isfinite(self.cpus_per_worker) and 0.1 <= self.cpus_per_worker <= 256):
            raise ValueError(f"cpus_per_worker must be in 0.1..256, got {self.cpus_per_worker!r}")


@dataclass(frozen=True)
class JobResult:
    """One written output: its path, size (W, H), the seconds it took and the writing actor's pid."""

    target: str
    size: tuple[int, int]
    seconds: float
    pid: int


def expected_size(c: CheckedJob, opts: UpscaleOptions) -> tuple[int, int]:
    """The (W, H) the output of a checked job will have."""
    w, h = c.info.size
    out_h, out_w = output_size(h, w, c.scale)
    return opts.size or (out_w, out_h)


def _complete(path: Path, size: tuple[int, int]) -> bool:
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: a file cut short elsewhere (a copy, another tool) is not complete
            return im.size == size
    except Exception:  # missing, truncated, or not an image: not complete
        return False


def split_complete(checked: list[CheckedJob], opts: UpscaleOptions) -> tuple[list[CheckedJob], list[CheckedJob]]:
    """(jobs to run, jobs whose output is already complete: a fully decodable image of the expected size)."""
    todo, done = [], []
    for c in checked:
        (done if _complete(c.job.target, expected_size(c, opts)) else todo).append(c)
    return todo, done


class _Upscaler:
    """One actor of the pool: a :class:`Pipeline`; a batch of pickled :class:`CheckedJob` rows in, results out."""

    config: RayJobConfig
    opts: UpscaleOptions

    def __init__(self) -> None:  # the settings are class attributes (see _actor_class): no constructor arguments
        from metasr.runtime.pipeline import Pipeline
        from metasr.runtime.ray_env import replica_cpus

        config = self.config
        threads = max(1, round(replica_cpus(config.cpus_per_worker)))
        self.pipeline = Pipeline(
            config.artifacts, config.backend, threads=threads, precision=config.precision, graph=config.graph
        )

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {"target": [], "w": [], "h": [], "seconds": [], "pid": [], "error": []}
        for blob in batch["job"]:
            c: CheckedJob = pickle.loads(blob)
            t0 = time.perf_counter()
            try:
                w, h = run_job(self.pipeline, c, self.opts)
                error = ""
            except (ImageError, ValueError, OSError) as e:  # this job's problem: reported, the run stops
                w = h = 0
                error = str(e).splitlines()[0] if str(e) else type(e).__name__
            values = (str(c.job.target), w, h, time.perf_counter() - t0, os.getpid(), error)
            for key, value in zip(out, values, strict=True):
                out[key].append(value)
        return out


def _actor_class(config: RayJobConfig, opts: UpscaleOptions) -> type[_Upscaler]:
    """:class:`_Upscaler` with the settings bound as class attributes: they travel with the class definition,
    so a restarted actor needs no constructor arguments kept in the object store."""
    return type("MetaSRUpscaler", (_Upscaler,), {"config": config, "opts": opts, "__module__": __name__})


def _pool_size(config: RayJobConfig, jobs: int, ray) -> int:
    if config.workers:
        return min(config.workers, jobs)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, min(jobs, int(cpus // config.cpus_per_worker)))


def run_ray_jobs(todo: list[CheckedJob], config: RayJobConfig, opts: UpscaleOptions) -> Iterator[JobResult]:
    """Run ``todo`` on Ray (started or joined by :func:`~metasr.runtime.ray_env.init_ray`), yielding each
    result as its output is written; :class:`ImageError` for a job that failed (the run stops there)."""
    if not todo:
        return
    from metasr.runtime.ray_env import init_ray

    ray = init_ray(config.address)
    import logging

    from ray.data import ActorPoolStrategy, DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no "progress bars disabled" notice
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the caller shows its own progress, one line per output
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    items = [{"job": pickle.dumps(c)} for c in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # one job per block: fine-grained streaming
    with warnings.catch_warnings():  # Ray 2.60 (pinned) has no named parameter for the two retry limits yet
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(
            _actor_class(config, opts),
            batch_size=1,
            compute=ActorPoolStrategy(size=_pool_size(config, len(todo), ray)),
            num_cpus=config.cpus_per_worker,
            max_restarts=-1,  # actors: as Ray Data's default (a long run's unrelated deaths add up)
            max_task_retries=MAX_ATTEMPTS - 1,  # jobs: bounded (the default, -1, retries a poison job for ever)
        )
    try:
        for row in ds.iter_rows():
            if row["error"]:
                raise ImageError(str(row["error"]))
            yield JobResult(str(row["target"]), (int(row["w"]), int(row["h"])), float(row["seconds"]), int(row["pid"]))
    except ray.exceptions.RayError as e:
        text = str(e).strip()
        if isinstance(e, ray.exceptions.RayActorError) or "actor died" in text.lower():
            raise ImageError(
                f"a job's worker died {MAX_ATTEMPTS} times (killed, out of memory, or an input that crashes it): "
                "the run stops; the outputs written so far are complete, a re-run resumes"
            ) from None
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
        raise ImageError(f"the Ray run failed: {first[:300]}") from None
