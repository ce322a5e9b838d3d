"""benchmarks/compare.py: the torch Griffin-Lim matches the runtime's, and the side-by-side runs a tiny model both ways
(the same weights: checkpoint hash and x̂0 parity), with the teacher arm extrapolated and labelled. Speed is never asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.runtime.griffinlim import griffin_lim, initial_phase

COMPARE = Path(__file__).resolve().parents[2] / "benchmarks" / "compare.py"


def load_compare():
    spec = importlib.util.spec_from_file_location("pdd_benchmarks_compare", COMPARE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


compare = load_compare()


@pytest.mark.parametrize("seed", [None, 3])
def test_torch_griffin_lim_matches_the_runtime(seed: int | None) -> None:
    audio = get_preset("tiny")
    rng = np.random.default_rng(0)
    magnitude = np.abs(rng.standard_normal((2, audio.n_freqs, audio.frames))).astype(np.float32) * 10
    phase = initial_phase(magnitude.shape, seed) if seed is not None else None
    want = griffin_lim(magnitude, audio, n_iter=8, phase0=phase)
    got = compare.torch_griffin_lim(
        torch.from_numpy(magnitude), audio, n_iter=8, phase0=None if phase is None else torch.from_numpy(phase)
    ).numpy()
    assert got.shape == want.shape
    assert compare.relative_error(got, want) < 1e-3


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random tiny student checkpoint and its bundle (vocoder graph with 0 Griffin-Lim iterations: fast to export;
    the comparison runs numpy and torch Griffin-Lim at their own iteration count)."""
    from pdd.export.bundle_writer import ExportOptions, export_bundle

    folder = tmp_path_factory.mktemp("compare")
    ckpt = folder / "tiny-4.pt"
    info = compare.make_random_checkpoint(ckpt, model="tiny", audio="tiny", steps=4)
    assert info["params"] > 0 and ckpt.is_file()
    engine = folder / "tiny-4"
    export_bundle(ExportOptions(ckpt=ckpt, steps=4, out=engine, gl_iters=0))
    return ckpt, engine


def test_side_by_side_runs_a_tiny_model_both_ways(tiny_export: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, engine = tiny_export
    options = compare.CompareOptions(ckpt=ckpt, engine=engine, batch=2, gl_iters=4, runs=2, warmup=0, teacher_steps=8,
                                     teacher_runs=1, threads=1)
    report = compare.run_comparison(options)
    json.dumps(report)
    assert report["same_weights"]["match"] is True
    assert report["parity"]["x0_relative_error"] < compare.PARITY_TOLERANCE
    assert report["parity"]["waveform_relative_error"] < 1e-2
    for part in ("pipeline", "griffin_lim", "denoiser_step", "teacher"):
        arms = report[part]["arms"]
        assert len(arms) == 2 and all(stats["n"] == (1 if part == "teacher" else 2) for stats in arms.values())
        assert report[part]["ratio"]["median"] > 0
    estimate = report["teacher"]["teacher_1024"]
    assert estimate["extrapolated"] is True and "extrapolated" in estimate["how"] and estimate["fastest_torch"] == "torch_eager"
    assert estimate["torch_eager"]["end_to_end_ms"] > 0 and estimate["runtime"]["end_to_end_ms"] > 0
    assert report["threads"]["torch"] == 1
    text = compare.markdown(report)
    assert "| pipeline:" in text and "Teacher at 1024 steps (extrapolated" in text

    # the CLI: files written, one-line errors
    out = tmp_path / "cmp.json"
    code = compare.main(["run", "--ckpt", str(ckpt), "--engine", str(engine), "--runs", "1", "--warmup", "0",
                         "--teacher-steps", "0", "--gl-iters", "2", "--json", str(out)])
    assert code == 0 and json.loads(out.read_text())["teacher"] is None


def test_refuses_an_engine_of_other_weights(tiny_export: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    _, engine = tiny_export
    other = tmp_path / "other.pt"
    compare.make_random_checkpoint(other, model="tiny", audio="tiny", steps=4, seed=1)
    with pytest.raises(ConfigError, match="was not exported from"):
        compare.run_comparison(compare.CompareOptions(ckpt=other, engine=engine, runs=1, teacher_steps=0))
    assert compare.main(["run", "--ckpt", str(other), "--engine", str(engine), "--runs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "was not exported from" in err[0]
    assert compare.main(["run", "--ckpt", str(other), "--engine", str(engine), "--runs", "0"]) == 2
    assert compare.main(["random-ckpt", "--out", str(other)]) == 2  # exists: never overwritten


def test_torch_arms_add_a_one_thread_arm_and_restore_threads() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    arms = compare.torch_arms("torch", 2, lambda: seen.append(torch.get_num_threads()))
    assert list(arms) == ["torch", "torch_1thread"]
    arms["torch_1thread"]()
    assert seen == [1] and torch.get_num_threads() == before
    assert list(compare.torch_arms("torch", 1, lambda: None)) == ["torch"]
