"""Property test: any value of any numeric option of any command ends in exit 0 or 2, never a traceback, quickly.

Each command runs in-process with inputs that do not exist (or an empty folder), so a value the option types
accept reaches the command's own checks and stops there, before any work; a value they refuse is argparse's
one-line usage error. Either way: exit 2, exactly one ``metasr: error: ...`` line, well under a second.
"""

from __future__ import annotations

import contextlib
import io
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")

from metasr.cli import main

# values a user (or a script) might pass: numbers of every size and sign, non-finite ones, junk text
_JUNK = ["", "nan", "-nan", "inf", "-inf", "1e309", "-1e309", "1e-320", "0x10", "1_000", "٣", " 5", "--", "0", "-0"]
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(_JUNK),
    st.text(max_size=6),
)
SIDES = st.one_of(st.integers(-5, 10**6), st.sampled_from([0, 1, 8, 65535, 65536, 2**31, 10**12]))
PAIRS = st.one_of(
    st.builds(lambda a, b: f"{a}x{b}", SIDES, SIDES), st.sampled_from(["", "x", "8x", "8x8x8", "axb"]), NUMBERS
)
THRESHOLDS = st.builds(
    lambda p, f, v: f"{p}.{f}={v}",
    st.sampled_from(["fp32", "fp16", "int8"]),
    st.sampled_from(["atol", "min_uint8_equal", "min_psnr_db", "max_gt_loss_db"]),
    st.one_of(NUMBERS, st.just("none")),
)
TRAIN_FIELDS = ["batch", "patch", "lr", "lr_step", "lr_gamma", "iterations", "val_every", "save_every", "seed"]
TRAIN_SETS = st.builds(
    lambda f, v: f"{f}={v}", st.sampled_from([*TRAIN_FIELDS, "threads", "betas", "scales", "val_scales"]), NUMBERS
)

# command -> (argv that fails fast once the options are accepted, {numeric option: values})
COMMANDS = {
    "train": (["train", "--train-dir", "{missing}", "--out", "{tmp}/run"], {"--set": TRAIN_SETS}),
    "eval": (["eval", "--model", "{missing}", "--data", "{missing}"], {"--scales": NUMBERS}),
    "export-onnx": (
        ["export-onnx", "--model", "{missing}", "--out", "{tmp}/x"],
        {"--opset": NUMBERS, "--lr-size": PAIRS, "--max-scale": NUMBERS},
    ),
    "demo": (["demo", "--model", "{missing}", "--out", "{tmp}/demo"], {"--scales": NUMBERS}),
    "upscale": (
        ["upscale", "{missing}", "-o", "{tmp}/o.png", "--artifacts", "{missing}"],
        {
            "--scale": NUMBERS,
            "--size": PAIRS,
            "--threads": NUMBERS,
            "--max-pixels": NUMBERS,
            "--upscale-budget-mb": NUMBERS,
            "--feature-tile": NUMBERS,
            "--png-compress": NUMBERS,
            "--memory-mb": NUMBERS,
            "--workers": NUMBERS,
        },
    ),
    "serve": (
        ["serve", "--artifacts", "{missing}"],
        {
            o: NUMBERS
            for o in ("--replicas", "--cpus-per-replica", "--port", "--max-body-mb", "--max-pixels", "--memory-mb",
                      "--max-ongoing-requests", "--max-queued-requests", "--request-timeout")
        },
    ),
    "parity": (
        ["parity", "--artifacts", "{missing}", "--images", "{missing}"],
        {"--scales": NUMBERS, "--threshold": THRESHOLDS},
    ),
    "calibrate": (
        ["calibrate", "--artifacts", "{missing}", "--images", "{tmp}", "--precision", "int8"],
        {
            o: NUMBERS
            for o in ("--percentile", "--budget-db", "--reference-psnr-db", "--crops", "--held-apart", "--seed")
        }
        | {"--max-kept": NUMBERS},
    ),
    "bench": (
        ["bench", "--model", "{missing}"],
        {"--lr-size": PAIRS, "--scale": NUMBERS, "--repeats": NUMBERS, "--memory-output": PAIRS},
    ),
    "build-engine": (
        ["build-engine", "--artifacts", "{missing}"],
        {"--lr-size": PAIRS, "--max-lr": PAIRS, "--workspace-mb": NUMBERS},
    ),
    "view": (["view", "--artifacts", "{tmp}"], {"--port": NUMBERS}),  # an empty folder: no manifest, never binds
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("command", list(COMMANDS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_numeric_options_exit_0_or_2_in_bounded_time(command, data, folder):
    base, options = COMMANDS[command]
    option = data.draw(st.sampled_from(sorted(options)), label="option")
    value = data.draw(options[option], label="value")
    argv = [a.format(tmp=folder, missing=folder / "missing") for a in base] + [f"{option}={value}"]
    if command == "upscale" and option not in ("--scale", "--size"):
        argv += ["--scale", "2"]  # one of the two is required
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    elapsed = time.perf_counter() - t0
    assert code in (0, 2), (argv, code, err.getvalue())
    lines = err.getvalue().strip().splitlines()
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("metasr: error: "), (argv, lines)
    assert elapsed < 10, (argv, elapsed)  # measured: < 0.1 s once the command's modules are imported
    assert not (folder / "run").exists() and not (folder / "x").exists() and not (folder / "demo").exists()


def test_every_numeric_option_is_range_checked_and_fuzzed():
    """No option parses with a bare int/float (unbounded), and every ranged option is in COMMANDS above."""
    from metasr.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    ranged = set()
    for name, parser in sub.choices.items():
        for action in parser._actions:
            assert action.type not in (int, float), (name, action.option_strings)
            if getattr(action.type, "__name__", "") in ("integer", "number", "size"):
                ranged.add((name, max(action.option_strings, key=len)))
    fuzzed = {(name, option) for name, (_, options) in COMMANDS.items() for option in options}
    assert ranged | {("train", "--set"), ("parity", "--threshold")} == fuzzed  # key=value texts, checked in the library
