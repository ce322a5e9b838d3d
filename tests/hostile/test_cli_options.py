"""Hostile command-line options for `pdd-run` and `pdd-bench`: counts that would allocate gigabytes or loop for hours,
non-finite numbers, output folders with traps planted in them. One `error:` line each (or a safe success), nothing
outside the command's own files changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pdd.runtime.cli_bench import app as bench_app
from pdd.runtime.cli_run import app as run_app

from hostile_checks import Guard, error_line, invoke

RUN_CASES: dict[str, tuple[list[object], str]] = {
    "-n 1e9": (["-n", 10**9], "-n must be <="),
    "-n -1": (["-n", -1], "-n must be >="),
    "--batch-size 1e6": (["--batch-size", 10**6], "--batch-size must be <="),
    "--seamless 1e6": (["--seamless", 10**6], "--seamless must be <="),
    "--steps 1e9": (["--steps", 10**9, "--mode", "loop"], "--steps must be <="),
    "--gl-iters 1e12": (["--gl-iters", 10**12], "--gl-iters must be <="),
    "--crossfade nan": (["--seamless", 2, "--crossfade", "nan"], "--crossfade must be a finite"),
    "--crossfade inf": (["--seamless", 2, "--crossfade", "inf"], "--crossfade must be a finite"),
    "--crossfade -1": (["--seamless", 2, "--crossfade", "-1"], "--crossfade must be a finite"),
    "--crossfade longer than a clip": (["--seamless", 2, "--crossfade", "1e6"], "--crossfade must be in"),
    "--seed -5": (["--seed", -5], "--seed must be >= 0"),
    "--format exe": (["--format", "exe"], "unknown --format"),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_hostile_pdd_run_options(bundle: Path, tmp_path: Path, case: str) -> None:
    args, fragment = RUN_CASES[case]
    guard = Guard(tmp_path)
    line = error_line(invoke(run_app, "--engine", bundle, "--out", tmp_path / "out", *args))
    assert fragment in line
    guard.unchanged()


BENCH_CASES: dict[str, tuple[list[object], str]] = {
    "--batch 100000": (["--batch", "100000"], "--batch must be <="),
    "--batch with 40 sizes": (["--batch", ",".join(str(i) for i in range(1, 41))], "number of --batch sizes"),
    "--batch of 5000 digits": (["--batch", "9" * 5000], "--batch takes"),
    "--runs 1e9": (["--runs", 10**9], "--runs must be <="),
    "--warmup 1e9": (["--warmup", 10**9], "--warmup must be <="),
    "--cold-runs 1e6": (["--cold-runs", 10**6], "--cold-runs must be <="),
    "--ab-runs 1e9": (["--ab-runs", 10**9], "--ab-runs must be <="),
}


@pytest.mark.parametrize("case", list(BENCH_CASES))
def test_hostile_pdd_bench_options(bundle: Path, tmp_path: Path, case: str) -> None:
    args, fragment = BENCH_CASES[case]
    guard = Guard(tmp_path)
    assert fragment in error_line(invoke(bench_app, "--engine", bundle, "--quiet", *args))
    guard.unchanged()


def test_out_is_a_file(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "out").write_text("the user's file")
    guard = Guard(tmp_path)
    assert "a file is in the way" in error_line(invoke(run_app, "--engine", bundle, "--out", tmp_path / "out", "-n", 1))
    guard.unchanged()


def test_an_existing_target_that_is_a_symlink_out_is_refused_and_kept(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "precious.wav").write_bytes(b"the user's recording")
    (out / "pdd-0-0.wav").symlink_to(tmp_path / "precious.wav")
    guard = Guard(tmp_path)
    assert "already exists" in error_line(invoke(run_app, "--engine", bundle, "--out", out, "-n", 1))
    guard.unchanged()


@pytest.mark.parametrize("planted", [".pdd-0-0.wav.tmp", ".pdd-0-0.json.tmp"])
def test_a_symlink_planted_at_a_temp_name_is_never_followed(bundle: Path, tmp_path: Path, planted: str) -> None:
    """The old predictable temp names, pointing outside --out: the write must not go through them."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "precious.txt").write_text("outside --out")
    (out / planted).symlink_to(tmp_path / "precious.txt")
    guard = Guard(tmp_path)
    result = invoke(run_app, "--engine", bundle, "--out", out, "-n", 1)
    assert result.exit_code == 0, result.output
    guard.unchanged(owned=["out/pdd-0-0.wav", "out/pdd-0-0.json"])
    assert (out / "pdd-0-0.wav").is_file() and not (out / "pdd-0-0.wav").is_symlink()


def test_overwrite_replaces_a_symlink_target_without_touching_what_it_points_to(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "precious.wav").write_bytes(b"the user's recording")
    (out / "pdd-0-0.wav").symlink_to(tmp_path / "precious.wav")
    guard = Guard(tmp_path)
    result = invoke(run_app, "--engine", bundle, "--out", out, "-n", 1, "--overwrite")
    assert result.exit_code == 0, result.output
    guard.unchanged(owned=["out/pdd-0-0.wav", "out/pdd-0-0.json"])


def test_non_utf8_out_folder_is_a_safe_success(bundle: Path, tmp_path: Path) -> None:
    out = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"out-\xff\xfe"))
    result = invoke(run_app, "--engine", bundle, "--out", out, "-n", 1)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "out-\\xff\\xfe" in result.output
    assert (Path(out) / "pdd-0-0.wav").is_file()


def test_many_clips_are_checked_by_one_folder_scan(bundle: Path, tmp_path: Path) -> None:
    """-n at its bound with one clip already there: refused at once, naming the file, not after 10 000 stat calls."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "pdd-0-9999.json").write_text("{}")
    (out / "pdd-0-10000.json").write_text("{}")  # beyond -n: not in the way
    guard = Guard(tmp_path)
    assert "pdd-0-9999.json already exists" in error_line(invoke(run_app, "--engine", bundle, "--out", out, "-n", 10_000))
    guard.unchanged()


MISSING_EXTRAS: dict[str, str] = {"onnx (the [export] extra)": "onnx", "torch (the [train] extra)": "torch"}


@pytest.mark.parametrize("case", list(MISSING_EXTRAS))
def test_pdd_export_without_its_extras_is_one_error_line(case: str, tmp_path: Path) -> None:
    """A runtime-only install (`pip install pdd[cpu]`) has neither onnx nor torch: pdd-export says what to install."""
    import subprocess
    import sys

    blocked = MISSING_EXTRAS[case]
    script = (f"import sys; sys.modules[{blocked!r}] = None\n"
              "from pdd.export.cli import app\n"
              f"app(['--ckpt', 'x.pt', '--steps', '2', '--out', {str(tmp_path / 'engine')!r}], prog_name='pdd-export')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("error: pdd-export needs the [export] and [train] extras") and blocked in lines[0]
    assert "pip install 'pdd[train,export]'" in lines[0] and not (tmp_path / "engine").exists()


def test_a_refused_run_leaves_no_empty_out_behind(bundle: Path, tmp_path: Path) -> None:
    """Refused after --out was made (the engine has no learned vocoder): the folders the run created go again."""
    out = tmp_path / "takes" / "today"
    guard = Guard(tmp_path)
    assert "no learned vocoder" in error_line(invoke(run_app, "--engine", bundle, "--out", out, "--vocoder", "neural"))
    assert not (tmp_path / "takes").exists()
    guard.unchanged()
    (tmp_path / "mine").mkdir()  # a folder the user made stays, even empty
    error_line(invoke(run_app, "--engine", bundle, "--out", tmp_path / "mine", "--vocoder", "neural"))
    assert (tmp_path / "mine").is_dir()
