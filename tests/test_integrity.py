"""Artifacts that cannot be subverted and outputs checked before any work (issue 21): the manifest's own hash,
its fields against the graphs, regular files of bounded size, symlinked artifact directories, calibrate's
carry-over, every output path of a run, the bundled model's cache key, telemetry and files opened."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import data_path, write_manifest
from PIL import Image

pytest.importorskip("onnxruntime")

from metasr.runtime.backends import BackendError, check_graph_io
from metasr.runtime.manifest import Manifest, ManifestError, content_hash
from metasr.runtime.pipeline import Pipeline

from metasr.cli import main
from metasr.data import load_rgb
from metasr.fileio import replace_dir, resolve_dir
from metasr.safeio import UnsafeFileError, read_regular

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def art(tmp_path, bundled_artifacts):
    out = tmp_path / "art"
    shutil.copytree(bundled_artifacts, out)
    return out


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def _error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("metasr: error: "), (code, err)
    return err[0]


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(load_rgb(data_path("Set5", "bird.png"))[:40, :48]).save(path)
    return path


# -- the manifest ----------------------------------------------------------------------------------------------
def test_a_hand_edited_manifest_is_refused(art, capsys, photo, tmp_path):
    """Before: editing receptive_radius gave seams (exit 0, max diff 10 on a 700x500 photo), scale_min_exclusive
    was ignored, merge_tol changed the output silently."""
    text = (art / "manifest.json").read_text()
    assert Manifest.from_json(text)  # as written: valid
    for edit in ('"receptive_radius": 18', '"merge_tol": 0.0001', '"scale_min_exclusive": 1.0'):
        assert edit in text, edit
        changed = text.replace(edit, edit[:-1] + ("2" if "radius" in edit else "3"))
        (art / "manifest.json").write_text(changed)
        code = main(["upscale", str(photo), "-o", str(tmp_path / "o.png"), "--scale", "2", "--artifacts", str(art)])
        assert "does not match its content_sha256" in _error(capsys, code)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["graphs"][0]["extra"].__setitem__("receptive_radius", 2), "the model's backbone has 18"),
        (lambda m: m["graphs"][0]["extra"].__setitem__("lr_size", [40, 48]), "differs from the graph's input"),
        (lambda m: m["graphs"][0]["extra"].pop("work_bytes_per_pixel"), "work_bytes_per_pixel is missing"),
        (lambda m: m["graphs"][1]["inputs"][0]["shape"].__setitem__(1, 16), "must have 32 channels"),
        (lambda m: m["model"].__setitem__("backbone", "vit"), "no known receptive radius"),
        (lambda m: m.__setitem__("schema_version", 1), "predates the manifest's own content hash"),
    ],
)
def test_manifest_fields_are_checked_against_each_other(art, edit, message):
    """Rewritten with a matching hash (as a buggy writer would): the fields still have to agree."""
    m = _manifest(art)
    edit(m)
    write_manifest(art, m)
    with pytest.raises(ManifestError, match=message) as e:
        Pipeline(art)
    assert "\n" not in str(e.value)


def test_the_graphs_io_is_checked_against_the_manifest(art):
    m = _manifest(art)  # a static 40x48 graph declared: the manifest agrees with itself, not with the graph
    m["graphs"][0]["inputs"][0]["shape"] = [1, 3, 40, 48]
    m["graphs"][0]["extra"]["lr_size"] = [40, 48]
    write_manifest(art, m)
    with pytest.raises(BackendError, match=r"lr is float32 \[1, 3, 'h', 'w'\] in the graph"):
        Pipeline(art)
    spec = Manifest.read(art, verify=False).graph("upscale")
    io = [(t.name, t.dtype, list(t.shape)) for t in spec.inputs]
    check_graph_io(spec, io, [(t.name, t.dtype, list(t.shape)) for t in spec.outputs])
    with pytest.raises(BackendError, match="are not the manifest's"):
        check_graph_io(spec, io[1:], [])


def test_scale_min_exclusive_is_honoured(art, photo, tmp_path, capsys):
    m = _manifest(art)
    m["scale_min_exclusive"] = 2.5
    write_manifest(art, m)
    args = ["upscale", str(photo), "-o", str(tmp_path / "o.png"), "--artifacts", str(art)]
    assert "in (2.5, 4]" in _error(capsys, main([*args, "--scale", "2"]))
    assert main([*args, "--scale", "3"]) == 0


def test_manifests_and_graphs_must_be_regular_files_of_bounded_size(art):
    """Before: a FIFO manifest or graph blocked forever; a manifest nested 100,000 deep was a RecursionError."""
    (art / "manifest.json").rename(art / "real.json")
    os.mkfifo(art / "manifest.json")
    signal.alarm(30)  # a regression would hang here
    try:
        with pytest.raises(ManifestError, match="FIFO, not a regular file"):
            Pipeline(art)
        os.unlink(art / "manifest.json")
        (art / "real.json").rename(art / "manifest.json")
        (art / "feature.onnx").unlink()
        os.mkfifo(art / "feature.onnx")
        with pytest.raises(ManifestError, match=r"feature\.onnx is a FIFO"):
            Pipeline(art)
    finally:
        signal.alarm(0)
    (art / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ManifestError, match="nested 100000 levels deep; at most 64"):
        Pipeline(art)
    with open(art / "manifest.json", "wb") as f:
        f.truncate(17 << 20)  # sparse: 17 MiB
    with pytest.raises(ManifestError, match="more than the limit"):
        Pipeline(art)


def test_safe_readers(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    assert read_regular(tmp_path / "a", 10) == b"x" * 10
    with pytest.raises(UnsafeFileError, match="more than the limit"):
        read_regular(tmp_path / "a", 9)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        read_regular(tmp_path / "link", 100)
    with pytest.raises(UnsafeFileError, match="a device"):
        read_regular("/dev/zero", 100)
    with pytest.raises(UnsafeFileError, match="a directory"):
        read_regular(tmp_path, 100)


def test_content_hash_covers_every_field(art):
    m = _manifest(art)
    recorded = m.pop("content_sha256")
    assert content_hash(m) == recorded
    for key in m:
        changed = json.loads(json.dumps(m))
        changed[key] = None if changed[key] != "x" else "y"
        assert content_hash(changed) != recorded, key


# -- artifact directories --------------------------------------------------------------------------------------
def test_export_onto_a_symlinked_directory(tmp_path, capsys):
    """Before: the link was replaced by a real folder, then "Cannot call rmtree on a symbolic link" (exit 2),
    a temporary link left beside it."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert main(["export-onnx", "--out", str(tmp_path / "link"), "--no-verify"]) == 0
    assert (tmp_path / "link").is_symlink() and Manifest.read(real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    code = main(["export-onnx", "--out", str(tmp_path / "dangling"), "--no-verify"])
    assert "is a symbolic link to" in _error(capsys, code)
    with pytest.raises(NotADirectoryError, match="symbolic link"):
        replace_dir(real, tmp_path / "link")
    assert resolve_dir(tmp_path / "link") == real


def test_calibrate_resolves_a_linked_directory_and_reads_nothing_through_links(tmp_path, bundled_artifacts):
    """Before: calibrate copied whatever links inside the directory pointed to (a 200 MB file, ~/.cache,
    /dev/zero until the disk was full) and replaced a linked directory by a real one."""
    from metasr.calibration.calibrate import CalibrationConfig, CalibrationError, calibrate

    real = tmp_path / "real"
    shutil.copytree(bundled_artifacts, real)
    (tmp_path / "link").symlink_to(real)
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(200 << 20)
    (real / "big.bin").symlink_to(tmp_path / "big.bin")
    (real / "zero").symlink_to("/dev/zero")
    (real / "home").symlink_to(Path.home())
    config = CalibrationConfig(
        image_dirs=(str(data_path("T91")),), precision="fp16", crops=4, held_apart=2, budget_db=10, min_psnr_db=0
    )
    result = calibrate(tmp_path / "link", config)
    assert result.met and (tmp_path / "link").is_symlink()
    named = {g.file for g in Manifest.read(real).graphs} | {"manifest.json"}
    assert {p.name for p in real.iterdir()} == named | {"calibration.fp16.md", "calibration.fp16.json"}
    m = _manifest(real)  # a calibration record naming a file that is a link: refused, nothing changed
    m["calibration"]["fp16"]["report"] = "zero"
    write_manifest(real, m)
    (real / "zero").symlink_to("/dev/zero")
    with pytest.raises(CalibrationError, match="zero is a symbolic link"):
        calibrate(real, config)


# -- outputs ---------------------------------------------------------------------------------------------------
def test_every_output_is_checked_before_any_work(tmp_path, capsys, photo, bundled_artifacts):
    """Before: a batch whose 3rd output was a folder wrote two images then failed; -o out.txt made a folder;
    -o '' and -o onto a text file named .png succeeded (the file overwritten)."""
    art = ["--artifacts", str(bundled_artifacts), "--scale", "2"]
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(photo, tmp_path / "in" / name)
    (tmp_path / "out" / "c.png").mkdir(parents=True)
    assert "is a folder" in _error(capsys, main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *art]))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["c.png"]
    cases = {
        "out.txt": "cannot write .txt files",
        "": "the output path is empty",
        "result": "has no image suffix",
        str(photo / "x.png"): "is not a folder",
    }
    for out, says in cases.items():
        assert says in _error(capsys, main(["upscale", str(photo), "-o", out, *art])), out
        assert not Path(out or "nothing").exists()
    notes = tmp_path / "notes.png"
    notes.write_text("my notes")
    assert "it is not an image" in _error(capsys, main(["upscale", str(photo), "-o", str(notes), *art]))
    assert (tmp_path / "notes.png").read_text() == "my notes"
    os.mkfifo(tmp_path / "fifo.png")
    assert "not a regular file" in _error(capsys, main(["upscale", str(photo), "-o", str(tmp_path / "fifo.png"), *art]))
    assert main(["upscale", str(photo), "-o", str(tmp_path / "made") + "/", *art]) == 0
    assert Image.open(tmp_path / "made" / "photo.png").size == (96, 80)
    assert main(["upscale", str(photo), "-o", str(tmp_path / "notes.png"), *art, "--force"]) == 0


def test_report_paths_are_checked_before_the_run(tmp_path, capsys, monkeypatch, bundled_artifacts):
    """Before: parity --report and bench --json failed only after the whole run (12-14 s here)."""
    import metasr.bench
    import metasr.parity

    monkeypatch.setattr(metasr.parity, "run_parity", lambda *a, **k: pytest.fail("ran before checking --report"))
    monkeypatch.setattr(metasr.bench, "run_bench", lambda *a, **k: pytest.fail("ran before checking --json"))
    parity = ["parity", "--artifacts", str(bundled_artifacts), "--images", str(data_path("Set5"))]
    assert "is a folder" in _error(capsys, main([*parity, "--report", str(tmp_path)]))
    assert "not a folder" in _error(capsys, main(["bench", "--json", str(Path(__file__) / "x.json")]))
    assert "is a folder" in _error(capsys, main(["bench", "--json", str(tmp_path)]))
    assert "/proc/x.json cannot be written" in _error(capsys, main(["bench", "--json", "/proc/x.json"]))  # as root too


# -- the bundled model's cache, privacy -------------------------------------------------------------------------
def test_the_bundled_cache_is_keyed_by_the_exporter(tmp_path, monkeypatch):
    import metasr.artifacts as artifacts

    digest = artifacts.exporter_digest()
    monkeypatch.setattr(artifacts, "EXPORTER_MODULES", (*artifacts.EXPORTER_MODULES, "metasr.upscale"))
    assert artifacts.exporter_digest() != digest  # another source file: another key
    monkeypatch.setenv("METASR_CACHE", str(tmp_path))
    monkeypatch.setattr(artifacts, "EXPORTER_MODULES", artifacts.EXPORTER_MODULES[:-1])
    first = artifacts.default_artifacts(verbose=False)
    assert first.name.endswith(digest[:12]) and Manifest.read(first).tools["exporter"] == digest
    m = _manifest(first)
    m["tools"]["exporter"] = "0" * 64  # a directory some other exporter wrote under this name
    write_manifest(first, m)
    assert artifacts.default_artifacts(verbose=False) == first
    assert Manifest.read(first).tools["exporter"] == digest  # exported again


def test_importing_metasr_turns_onnx_runtime_telemetry_off():
    code = "import os, metasr, onnxruntime; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "1"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)")
def test_a_traced_run_opens_nothing_outside_its_paths_and_no_socket(bundled_artifacts):
    """Before: ONNX Runtime wrote ~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db on every run
    and tqdm created a semaphore in /dev/shm."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "trace-run"), "--artifacts", str(bundled_artifacts)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no network calls" in res.stdout and "socket AF_INET" not in res.stdout
