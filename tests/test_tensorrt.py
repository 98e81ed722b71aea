"""TensorRT without TensorRT: the upscale engine's profile against the projection, engine metadata, the
plugin's signatures against NVIDIA's own ``tensorrt.plugin`` sources, the API names the code uses against
the compiled bindings of TensorRT 10.9 and 11.4, and (where a GPU and TensorRT exist) real engines."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from metasr.runtime.engine_profile import DEFAULT_MAX_OFFSETS, ProfileError, UpscaleProfile, upscale_profile
from metasr.runtime.engines import EngineInfo, EngineMismatchError, check_compatible
from metasr.runtime.feeds import plan_feeds
from metasr.runtime.projection import MERGE_TOL, project
from metasr.runtime.trt_env import probe

ROOT = Path(__file__).resolve().parents[1]
TRT_MODULES = [ROOT / "export" / "trt_build.py", ROOT / "export" / "trt_plugin.py", ROOT / "runtime" / "trt_backend.py"]

# -- the upscale engine's optimization profile ---------------------------------------------------------------

MAX_LR = (23, 31)
PROFILE = upscale_profile(32, MAX_LR, 4.0, MERGE_TOL)


@settings(max_examples=300, deadline=None)
@given(
    h=st.integers(1, MAX_LR[0]),
    w=st.integers(1, MAX_LR[1]),
    scale=st.one_of(st.floats(1.0, 4.0, exclude_min=True), st.sampled_from([1.1, 2.3, 2.7, 3.3, 3.7, 4.0])),
)
def test_profile_covers_every_plan_in_range(h, w, scale):
    """Any LR region up to max_lr at any scale, fed whole: inside the profile whenever its plan has at most
    max_offsets distinct offsets per axis (the paper's scales all do; others are cut into smaller tiles)."""
    plan = project(h, w, scale)
    feeds = {"features": np.zeros((1, 32, h, w), np.float32), **plan_feeds(plan)}
    if max(plan.rows.offsets.size, plan.cols.offsets.size) <= DEFAULT_MAX_OFFSETS:
        PROFILE.check(feeds)  # raises ProfileError naming the input and dimension otherwise
    else:
        with pytest.raises(ProfileError, match="offsets dim 0"):
            PROFILE.check(feeds)


@settings(max_examples=80, deadline=None)
@given(
    h=st.integers(1, 120),
    w=st.integers(1, 120),
    scale=st.floats(1.0, 4.0, exclude_min=True),
    max_lr=st.tuples(st.integers(8, 40), st.integers(8, 40)),
)
def test_profile_tiles_cover_the_output_once_inside_the_engine_profile(h, w, scale, max_lr):
    """How the Pipeline feeds a TensorRT upscale engine: every tile's window and plan inside its profile."""
    from metasr.runtime.tiling import plan_profile_tiles, window_feeds

    profile = upscale_profile(8, max_lr, 4.0, MERGE_TOL)
    plan = project(h, w, scale)
    feeds = plan_feeds(plan)
    covered = np.zeros(plan.out_size, dtype=np.int64)
    for t in plan_profile_tiles(feeds, h, w, profile):
        covered[t.rows, t.cols] += 1
        window = np.empty((1, 8, t.in_rows.stop - t.in_rows.start, t.in_cols.stop - t.in_cols.start), np.float32)
        profile.check({"features": window, **window_feeds(feeds, t, compact_offsets=True)})
    assert np.all(covered == 1)


def test_compacted_tile_feeds_give_the_same_output_on_onnx_runtime(bundled_artifacts):
    """The offsets a TensorRT tile is fed (only those it uses, renumbered) compute the same pixels: checked
    on the upscale graph itself, through ONNX Runtime, at a scale with many offsets."""
    ort = pytest.importorskip("onnxruntime")
    from metasr.runtime.tiling import plan_profile_tiles, window_feeds

    sess = ort.InferenceSession(str(bundled_artifacts / "upscale.onnx"), providers=["CPUExecutionProvider"])
    feats = (np.random.default_rng(1).standard_normal((1, 32, 30, 41)) * 3).astype(np.float32)
    feeds = plan_feeds(project(30, 41, 3.7))
    tiles = plan_profile_tiles(feeds, 30, 41, upscale_profile(32, (16, 16), 4.0, MERGE_TOL, max_offsets=16))
    assert len(tiles) > 4
    for t in tiles[:4]:
        window = np.ascontiguousarray(feats[:, :, t.in_rows, t.in_cols])
        full, compact = window_feeds(feeds, t, compact_offsets=False), window_feeds(feeds, t)
        assert compact["row_offsets"].size < full["row_offsets"].size
        a = sess.run(None, {"features": window, **full})[0]
        b = sess.run(None, {"features": window, **compact})[0]
        assert np.abs(a - b).max() <= 1e-3  # measured 0 / ~1e-5: the same filters per pair


def test_profile_opt_is_a_real_plan_and_bounds_are_tight_where_they_can_be():
    lo, opt, hi = PROFILE.shapes["row_src"]
    assert lo == (1,) and hi == (int(4.0 * MAX_LR[0]),) and opt == (int(2.0 * MAX_LR[0]),)
    assert PROFILE.shapes["features"][2] == (1, 32, *MAX_LR)
    assert PROFILE.shapes["inv_scale"] == ((1,), (1,), (1,))
    big = upscale_profile(64, (270, 480), 4.0, MERGE_TOL)
    assert big.shapes["col_slots"][2] == (480, 10)  # K_c <= 2 * ceil(4) + 2 (2-column blocks at r = p/2)


def test_profile_refuses_a_region_outside_it_clearly():
    feeds = {"features": np.zeros((1, 32, 24, 31), np.float32), **plan_feeds(project(24, 31, 2.0))}
    with pytest.raises(ProfileError, match=r"features dim 2 is 24; the engine's profile allows 1\.\.23"):
        PROFILE.check(feeds)
    feeds = {"features": np.zeros((1, 32, 23, 20), np.float32), **plan_feeds(project(23, 20, 4.5, max_scale=5))}
    with pytest.raises(ProfileError, match=r"row_src dim 0 is 103; the engine's profile allows 1\.\.92"):
        PROFILE.check(feeds)


def test_profile_round_trips_and_validates():
    assert UpscaleProfile.from_json(PROFILE.to_json()) == PROFILE
    with pytest.raises(ProfileError, match="min <= opt <= max"):
        UpscaleProfile({"x": ((2,), (1,), (3,))}, (8, 8), 4.0, 32)
    with pytest.raises(ProfileError, match="malformed"):
        UpscaleProfile.from_json({"shapes": {}})
    with pytest.raises(ProfileError, match="outside the max"):
        upscale_profile(32, (8, 8), 4.0, MERGE_TOL, opt_lr=(9, 8))


# -- engine metadata in the manifest -------------------------------------------------------------------------


def _extra(kind="upscale", **over):
    extra = {"tensorrt_version": "10.9.0.34", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    extra["source"] = "u.onnx"
    if kind == "upscale":
        extra |= {"profile": PROFILE.to_json(), "plugin_impl": "aot", "ptx_isa": "8.0"}
    else:
        extra |= {"lr_size": [256, 256]}
    return extra | over


def test_engine_metadata_is_validated():
    info = EngineInfo.from_extra("upscale", _extra())
    assert info.profile == PROFILE and info.plugin_impl == "aot"
    assert EngineInfo.from_extra("upscale", info.to_extra()) == info
    assert EngineInfo.from_extra("feature", _extra("feature")).lr_size == (256, 256)
    for kind, bad, field in [
        ("upscale", {"tensorrt_version": 10}, "tensorrt_version"),
        ("upscale", {"compute_capability": "sm_89"}, "compute_capability"),
        ("upscale", {"plugin_impl": "cuda"}, "plugin_impl"),
        ("upscale", {"profile": {"shapes": 1}}, "profile"),
        ("feature", {"lr_size": [256, -1]}, "lr_size"),
        ("feature", {"gpu_name": ""}, "gpu_name"),
    ]:
        with pytest.raises(ValueError, match=field):
            EngineInfo.from_extra(kind, _extra(kind, **bad))


def test_an_engine_from_another_tensorrt_or_gpu_is_refused_naming_both():
    info = EngineInfo.from_extra("feature", _extra("feature"))
    check_compatible(info, "f.plan", "10.9.0.34", "8.9", "NVIDIA L4")
    with pytest.raises(EngineMismatchError, match=r"built by TensorRT 10\.9\.0\.34; this is TensorRT 11\.4\.0\.106"):
        check_compatible(info, "f.plan", "11.4.0.106", "8.9", "NVIDIA L4")
    msg = r"built for NVIDIA L4 \(compute capability 8\.9\); this GPU is NVIDIA H"
    with pytest.raises(EngineMismatchError, match=msg):
        check_compatible(info, "f.plan", "10.9.0.34", "9.0", "NVIDIA H100")


# -- the plugin against NVIDIA's tensorrt.plugin sources (10.9 and 11.4) -----------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # NVIDIA's docstrings hold invalid escapes
@pytest.mark.parametrize("version", ["10.9", "11.4"])
def test_plugin_signatures_satisfy_tensorrt_plugin(version):
    from trt_stub import stub_tensorrt

    with stub_tensorrt(version) as trtp:
        import metasr.export.trt_plugin as plugin
        from tensorrt.plugin._lib import QDP_REGISTRY

        d = QDP_REGISTRY[plugin.PLUGIN_ID]
        from metasr.kernels.spec import INPUT_PARAMS

        assert tuple(d.input_tensor_names) == INPUT_PARAMS and d.num_outputs == 1 and not d.input_attrs
        assert d.aot_impl_func is plugin.meta_upscale_aot_impl and d.impl_func is plugin.meta_upscale_impl
        combos = plugin.meta_upscale_autotune(*[None] * (len(INPUT_PARAMS) + 1))
        n_index = len(INPUT_PARAMS) - 2
        assert len(combos) == 1 and combos[0].io_types == ["FP32|FP16", "FP32|FP16", *["INT64"] * n_index, "FP32|FP16"]
        # the same validator refuses a wrong signature: the check above is not vacuous
        with pytest.raises(ValueError, match="does not match the expected input arg schema"):
            trtp.aot_impl(plugin.PLUGIN_ID)(lambda features, outputs, tactic: None)
        public = ("register", "autotune", "aot_impl", "impl", "TensorDesc", "Tensor", "AutoTuneCombination",
                  "KernelLaunchParams", "SymExprs", "SymIntExprs", "SymInt32", "cdiv", "from_shape_expr")  # fmt: skip
        assert all(hasattr(trtp, name) for name in public), version


# -- installing engines into an artifact directory (pure Python: runs here with stand-in engine bytes) --------


def _fake_engines(art: Path, tag: bytes) -> list:
    from metasr.export.trt_build import _engine_spec
    from metasr.runtime.manifest import Manifest, TensorSpec

    m = Manifest.read(art)
    feat, up = m.graph("feature"), m.graph("upscale")
    common = {"tensorrt_version": "10.9.0.34", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    f_info = EngineInfo(kind="feature", source=feat.file, lr_size=(64, 64), **common)
    u_info = EngineInfo(kind="upscale", source=up.file, profile=PROFILE, plugin_impl="aot", ptx_isa="8.0", **common)
    static = (TensorSpec(feat.inputs[0].name, "float32", (1, 3, 64, 64)),)  # as build_engines declares it
    return [
        (_engine_spec(feat, "feature.fp32.64x64.plan", "fp32", f_info, static), b"feature engine " + tag),
        (_engine_spec(up, "upscale.fp32.plan", "fp32", u_info, up.inputs), b"upscale engine " + tag),
    ]


def test_engines_are_installed_atomically_and_replace_their_predecessors(bundled_artifacts, tmp_path, monkeypatch):
    import shutil

    import metasr.export.trt_build as tb
    from metasr.export.trt_build import EngineBuildConfig, _install
    from metasr.runtime.manifest import Manifest

    art = tmp_path / "art"
    shutil.copytree(bundled_artifacts, art)
    cfg = EngineBuildConfig(timing_cache=tmp_path / "trt.cache")
    first = _install(art, Manifest.read(art), _fake_engines(art, b"1"), cfg, b"cache 1")
    m = Manifest.read(art)  # every file it names is there with its sha256
    assert {s.file for s in first} <= {g.file for g in m.graphs}
    assert all(s.file.endswith(f".{s.sha256[:12]}.plan") for s in first)
    assert m.graph("feature").format == "onnx" and (tmp_path / "trt.cache").read_bytes() == b"cache 1"
    assert EngineInfo.from_extra("feature", first[0].extra).lr_size == (64, 64)
    assert first[0].extra["receptive_radius"] == m.graph("feature").extra["receptive_radius"]
    before = _tree(art)

    def failing_manifest(path, *a, **k):  # the manifest write fails after the engines were written
        if Path(path).name == "manifest.json":
            raise OSError("disk full")
        return real(path, *a, **k)

    real = tb.atomic_path
    monkeypatch.setattr(tb, "atomic_path", failing_manifest)
    with pytest.raises(OSError, match="disk full"):
        _install(art, Manifest.read(art), _fake_engines(art, b"2"), cfg, b"cache 2")
    assert _tree(art) == before  # the new engines removed, the old manifest and its files intact
    monkeypatch.setattr(tb, "atomic_path", real)
    second = _install(art, Manifest.read(art), _fake_engines(art, b"2"), cfg, b"cache 2")
    files = {p.name for p in art.iterdir()}
    assert {s.file for s in second} <= files and not {s.file for s in first} & files  # predecessors removed
    assert len([g for g in Manifest.read(art).graphs if g.format == "tensorrt"]) == 2


# -- API names against the compiled bindings ------------------------------------------------------------------

# variables in the TensorRT modules that hold TensorRT objects: attributes read from them are TensorRT API
TRT_OBJECTS = {"builder", "network", "parser", "config", "profile", "self.engine", "self.context", "self._runtime",
               "network.get_layer(i)", "config.get_timing_cache()"}  # fmt: skip
REMOVED_IN_11 = {"EXPLICIT_BATCH", "int8_calibrator", "IInt8Calibrator", "IInt8EntropyCalibrator2",
                 "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "IInt8EntropyCalibrator"}  # fmt: skip


def _trt_names() -> set[str]:
    names: set[str] = set()
    for path in TRT_MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain, base = [], node
                while isinstance(base, ast.Attribute):
                    chain.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and base.id == "trt":
                    names.update(a for a in chain if not a.startswith("__"))
                if ast.unparse(node.value) in TRT_OBJECTS:
                    names.add(node.attr)
            elif isinstance(node, ast.Call) and ast.unparse(node.func) == "_network_flags":  # flags by name
                names |= {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return names


def test_every_tensorrt_name_used_exists_in_10_9_and_11_4():
    from trt_stub import exported_names

    used = _trt_names()
    anchors = {"Builder", "OnnxParser", "create_network", "build_serialized_network", "STRONGLY_TYPED",
               "PREFER_AOT_PYTHON_PLUGINS", "deserialize_cuda_engine", "execute_async_v3", "set_input_shape",
               "set_tensor_address", "set_shape", "PLUGIN_V3", "WORKSPACE", "create_timing_cache"}  # fmt: skip
    assert anchors <= used, sorted(anchors - used)  # the scan sees the code (not vacuous)
    for version in ("10.9", "11.4"):
        missing = {n for n in used if not exported_names(version, n)}
        assert not missing, (version, sorted(missing))


def test_no_name_tensorrt_11_removed_is_used():
    from trt_stub import exported_names

    for name in ("EXPLICIT_BATCH", "int8_calibrator"):  # the name check tells the versions apart
        assert exported_names("10.9", name) and not exported_names("11.4", name)
    code_names: set[str] = set()  # identifiers and attribute chains in code (not docstrings or comments)
    for path in ROOT.glob("*/**/*.py"):
        if {"tests", ".venv", "build"} & set(path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                code_names |= {node.attr, ast.unparse(node).split(".", 1)[-1]}
            elif isinstance(node, ast.Name):
                code_names.add(node.id)
            elif isinstance(node, ast.keyword) and node.arg:
                code_names.add(node.arg)
    assert "create_network" in code_names  # the scan reaches the TensorRT code
    used = {n for n in code_names if n in REMOVED_IN_11 or n.endswith(("BuilderFlag.FP16", "BuilderFlag.INT8"))}
    assert not used, sorted(used)


# -- without a GPU or TensorRT: refused in one line, nothing touched ---------------------------------------

ENV = probe()


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.skipif(ENV.ready, reason="checks the refusal where a GPU or TensorRT is missing")
@pytest.mark.parametrize("command", ["build-engine", "upscale", "bench"])
def test_trt_commands_without_gpu_or_tensorrt_exit_2_in_one_line(bundled_artifacts, tmp_path, command):
    import shutil
    import subprocess
    import sys

    from PIL import Image

    art = tmp_path / "art"
    shutil.copytree(bundled_artifacts, art)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "in.png")
    before = _tree(art)
    args = {
        "build-engine": ["build-engine", "--artifacts", str(art), "--precision", "fp32"],
        "upscale": ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--scale", "2",
                    "--artifacts", str(art), "--backend", "trt"],
        "bench": ["bench", "--backend", "trt", "--artifacts", str(art), "--no-memory", "--repeats", "1"],
    }[command]  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "metasr.cli", *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "needs a CUDA GPU and TensorRT" in lines[0] and ENV.problem.split(";")[0] in lines[0]
    assert _tree(art) == before and not (tmp_path / "out.png").exists()


# -- on a machine with a GPU and TensorRT --------------------------------------------------------------------

needs_trt = pytest.mark.skipif(not ENV.ready, reason=f"needs a CUDA GPU and TensorRT: {ENV.problem}")


@pytest.mark.skipif(ENV.cuda_devices < 1, reason=f"needs a CUDA GPU and cuda-bindings: {ENV.problem}")
def test_cuda_buffers_round_trip_and_are_reused():
    from metasr.runtime.cuda_buffers import DeviceBuffer, Stream

    stream, buf = Stream(), DeviceBuffer()
    try:
        a = np.arange(1000, dtype=np.float32).reshape(10, 100)
        stream.upload(buf, a)
        ptr = buf.ptr
        assert np.array_equal(stream.download(buf, np.empty_like(a)), a)
        b = np.full(500, 7, dtype=np.int64)  # smaller: the same allocation is reused
        stream.upload(buf, b)
        assert buf.ptr == ptr and np.array_equal(stream.download(buf, np.empty_like(b)), b)
        c = np.ones((300, 100), dtype=np.float32)  # larger: grown
        stream.upload(buf, c)
        assert buf.nbytes >= c.nbytes and np.array_equal(stream.download(buf, np.empty_like(c)), c)
    finally:
        buf.free()
        stream.close()


@pytest.fixture(scope="module")
def trt_artifacts(tmp_path_factory):
    from metasr.export import export_onnx

    from metasr.bundled import bundled_model_path
    from metasr.checkpoint import load_model

    out = tmp_path_factory.mktemp("trt") / "small"
    export_onnx(load_model(bundled_model_path()), out)
    return out


@needs_trt
@pytest.mark.parametrize("precision", ["fp32"])
def test_engines_build_and_match_onnx_runtime(trt_artifacts, precision):
    from metasr.export.trt_build import EngineBuildConfig, build_engines
    from metasr.runtime.manifest import Manifest
    from metasr.runtime.pipeline import Pipeline

    specs = build_engines(trt_artifacts, EngineBuildConfig(precision=precision, lr_sizes=((64, 64),), max_lr=(96, 96)))
    manifest = Manifest.read(trt_artifacts)
    assert {s.file for s in specs} <= {g.file for g in manifest.graphs}
    up = next(s for s in specs if s.kind == "upscale")
    assert up.extra["plugin_impl"] == "aot" and up.extra["ptx_isa"] == "8.0"
    img = (np.random.default_rng(0).random((150, 170, 3)) * 255).astype(np.uint8)
    with Pipeline(trt_artifacts, "ort") as ort_p, Pipeline(trt_artifacts, "trt", precision=precision) as trt_p:
        for scale in (1.5, 2.3, 4.0):
            a, b = ort_p.upscale(ort_p.encode(img), scale), trt_p.upscale(trt_p.encode(img), scale)
            assert a.shape == b.shape
            assert np.abs(a - b).max() <= 1e-2  # FP32 engines: the parity limit on 0..255 (docs/parity.md)
