"""Hostile inputs to `pdd-vocoder train` and to the learned-vocoder checkpoints `pdd-export` reads: a cache index that
names a folder outside the cache (/etc, another user's music), damaged checkpoints on --resume, checkpoints claiming a
model of any size, bad counts. One `error:` line each, nothing read outside what the user named, nothing changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import soundfile as sf
import torch

from pdd.export.cli import app as export_app
from pdd.runtime.config import get_preset
from pdd.training.cache import synthetic_piece, write_synthetic_cache
from pdd.training.cli_vocoder import app as vocoder_app
from pdd.training.vocoder_train import CHECKPOINT_FILE

from hostile_checks import Guard, error_line, invoke

TINY = get_preset("tiny")
FAST = ["--preset", "tiny", "--audio-preset", "tiny", "--batch-size", "2", "--segment-frames", "16", "--warmup", "1",
        "--preview-every", "1000", "--log-every", "1", "--checkpoint-every", "1", "--threads", "1", "--no-progress"]


def write_audio(folder: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / name, synthetic_piece(TINY, 2.0, seed=i), TINY.sample_rate, subtype="FLOAT")
    return folder


@pytest.fixture
def cache_with_audio(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny cache and, outside it, the audio folder its index names (as `pdd-data prepare` writes: absolute)."""
    cache = write_synthetic_cache(tmp_path / "cache", TINY, 4, 2)
    index = json.loads((cache / "index.json").read_text())
    audio = write_audio(tmp_path / "music", sorted(set(index["sources"])))
    index["input"] = str(audio.resolve())
    (cache / "index.json").write_text(json.dumps(index))
    return cache, audio


def set_input(cache: Path, value: Any, sources: list[str] | None = None) -> None:
    index = json.loads((cache / "index.json").read_text())
    index["input"] = value
    if sources is not None:
        index["sources"] = sources + index["sources"][len(sources):]
    (cache / "index.json").write_text(json.dumps(index))


INPUT_CASES: dict[str, Callable[[Path, Path], None]] = {
    "index input /etc, sources shadow and passwd": lambda c, a: set_input(c, "/etc", ["shadow", "passwd"]),
    "index input /proc/self": lambda c, a: set_input(c, "/proc/self", ["environ", "cmdline"]),
    "index input another user's music (absolute)": lambda c, a: None,  # the fixture's honest but outside folder
    "index input ../music (relative, outside)": lambda c, a: set_input(c, "../music"),
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_a_cache_index_never_chooses_a_folder_outside_the_cache(cache_with_audio: tuple[Path, Path], tmp_path: Path,
                                                                case: str, one_torch_thread: None) -> None:
    cache, audio = cache_with_audio
    INPUT_CASES[case](cache, audio)
    guard = Guard(tmp_path)
    line = error_line(invoke(vocoder_app, "train", "--data", cache, "--out", tmp_path / "run", "--steps", 2, *FAST))
    assert "outside the cache" in line and "--audio-dir" in line
    assert "shadow" not in line and "environ" not in line
    guard.unchanged(owned=["run/"])  # the run folder's own ownership ledger, nothing else
    assert not (tmp_path / "run" / "previews").exists()


def test_audio_dir_named_on_the_command_line_is_read(cache_with_audio: tuple[Path, Path], tmp_path: Path,
                                                     one_torch_thread: None) -> None:
    cache, audio = cache_with_audio
    result = invoke(vocoder_app, "train", "--data", cache, "--audio-dir", audio, "--out", tmp_path / "run", "--steps", 2,
                    *FAST)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / CHECKPOINT_FILE).is_file()


def test_an_audio_folder_inside_the_cache_needs_no_option(cache_with_audio: tuple[Path, Path], tmp_path: Path,
                                                          one_torch_thread: None) -> None:
    cache, audio = cache_with_audio
    shutil.copytree(audio, cache / "audio")
    set_input(cache, "audio")
    result = invoke(vocoder_app, "train", "--data", cache, "--out", tmp_path / "run", "--steps", 2, *FAST)
    assert result.exit_code == 0, result.output


def test_audio_dir_without_a_cache_is_one_error(tmp_path: Path) -> None:
    audio = write_audio(tmp_path / "music", ["a.wav"])
    line = error_line(invoke(vocoder_app, "train", "--data", audio, "--audio-dir", audio, "--out", tmp_path / "run",
                             "--steps", 2, *FAST))
    assert "not a cache" in line


def test_a_fractional_clip_source_is_one_error(cache_with_audio: tuple[Path, Path], tmp_path: Path) -> None:
    cache, audio = cache_with_audio
    index = json.loads((cache / "index.json").read_text())
    index["splits"]["train"]["clip_source"][0] = 0.5
    (cache / "index.json").write_text(json.dumps(index))
    guard = Guard(tmp_path)
    line = error_line(invoke(vocoder_app, "train", "--data", cache, "--audio-dir", audio, "--out", tmp_path / "run",
                             "--steps", 2, *FAST))
    assert "integers" in line and "corrupt" in line
    guard.unchanged(owned=["run/"])


@pytest.mark.parametrize("threads", ["0", "-1", "5000"])
def test_bad_thread_counts_are_one_error_line(tmp_path: Path, threads: str) -> None:
    audio = write_audio(tmp_path / "music", ["a.wav"])
    line = error_line(invoke(vocoder_app, "train", "--data", audio, "--out", tmp_path / "run", "--steps", 2,
                             *FAST[:-3], "--threads", threads))
    assert "--threads must be in [1, 1024]" in line


# ---------------------------------------------------------------------------------------------------------------------
# --resume verifies the checkpoint before trusting it


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vocoder-run")
    audio = write_audio(root / "music", ["a.wav"])
    torch.set_num_threads(1)
    result = invoke(vocoder_app, "train", "--data", audio, "--out", root / "run", "--steps", 2, *FAST)
    assert result.exit_code == 0, result.output
    return root / "run"


def ckpt_edit(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        state = torch.load(run / CHECKPOINT_FILE, weights_only=True)
        change(state)
        torch.save(state, run / CHECKPOINT_FILE)
    return apply


def _first_key(weights: dict) -> str:
    return next(iter(weights))


def _wrong_moment(state: dict) -> None:
    moments = state["optimizer"]["state"][0]
    moments["exp_avg"] = torch.zeros(3, 3, 3)


RESUME_CASES: dict[str, Callable[[Path], None]] = {
    "raw weights missing": ckpt_edit(lambda s: s.pop("raw")),
    "a raw weight of the wrong shape": ckpt_edit(lambda s: s["raw"].update({_first_key(s["raw"]): torch.zeros(2, 2)})),
    "EMA weights are strings": ckpt_edit(lambda s: s.update(model={"x": "y"})),
    "optimizer is text": ckpt_edit(lambda s: s.update(optimizer="junk")),
    "an optimizer moment of the wrong shape": ckpt_edit(_wrong_moment),
    "rng state missing": ckpt_edit(lambda s: s.update(rng={})),
    "rng state is floats": ckpt_edit(lambda s: s["rng"].update(torch=torch.zeros(5))),
    "step is text": ckpt_edit(lambda s: s.update(step="ten")),
    "step is negative": ckpt_edit(lambda s: s.update(step=-5)),
    "another vocoder preset in info": ckpt_edit(lambda s: s["info"]["vocoder"].update(dim=48)),
    "info is a list": ckpt_edit(lambda s: s.update(info=[1])),
    "a teacher's kind": ckpt_edit(lambda s: s.update(kind="teacher")),
    "truncated file": lambda run: (run / CHECKPOINT_FILE).write_bytes((run / CHECKPOINT_FILE).read_bytes()[:3000]),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_refuses_a_damaged_checkpoint(trained_run: Path, tmp_path: Path, case: str, one_torch_thread: None) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    RESUME_CASES[case](run)
    guard = Guard(tmp_path)
    line = error_line(invoke(vocoder_app, "train", "--out", run, "--resume", "--steps", 4, "--no-progress", "--threads", 1))
    assert "checkpoint" in line or "vocoder.pt" in line, line
    guard.unchanged()


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint-declared sizes are bounded before anything is allocated


def claimed(trained_run: Path, folder: Path, vocoder: dict[str, int], weights: Any = None) -> Path:
    state = torch.load(trained_run / CHECKPOINT_FILE, weights_only=True)
    state["info"]["vocoder"].update(vocoder)
    if weights is not None:
        state["model"] = weights
    target = folder / "claims.pt"
    torch.save(state, target)
    return target


SIZE_CASES: dict[str, tuple[dict[str, int], Any, str]] = {
    "8192 layers of 8192 × 8192": ({"dim": 8192, "intermediate": 8192, "layers": 8191}, None, "over the limit"),
    "a 130 M model in one expanded value": ({"dim": 2048, "intermediate": 4096, "layers": 7},
                                            {"w": torch.zeros(1).expand(10**9)}, "stores 1 values"),
}


@pytest.mark.parametrize("case", list(SIZE_CASES))
def test_a_vocoder_checkpoint_claiming_any_size_is_refused_before_allocating(trained_run: Path, bundle: Path,
                                                                            tmp_path: Path, case: str) -> None:
    sizes, weights, fragment = SIZE_CASES[case]
    ckpt = claimed(trained_run, tmp_path, sizes, weights)
    guard = Guard(tmp_path)
    line = error_line(invoke(export_app, "--from-bundle", bundle, "--vocoder-ckpt", ckpt, "--out", tmp_path / "v2"))
    assert fragment in line, line
    guard.unchanged()
    assert not (tmp_path / "v2").exists()


ALLOCATION_FAILURES: dict[str, BaseException] = {
    "MemoryError": MemoryError(),
    "torch's allocator error": RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                            "memory: you tried to allocate 8600000000 bytes"),
}


@pytest.mark.parametrize("case", list(ALLOCATION_FAILURES))
def test_an_allocation_failure_is_one_error_line(trained_run: Path, bundle: Path, teacher_master: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    import pdd.training.checkpoint as checkpoint
    import pdd.training.vocoder_train as vocoder_train

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise ALLOCATION_FAILURES[case]

    monkeypatch.setattr(vocoder_train, "MelVocoder", fail)
    line = error_line(invoke(export_app, "--from-bundle", bundle, "--vocoder-ckpt", trained_run / CHECKPOINT_FILE,
                             "--out", tmp_path / "v2"))
    assert "out of memory allocating a model of" in line
    real = checkpoint.build_denoiser
    monkeypatch.setattr(checkpoint, "build_denoiser", lambda config: real(config) if torch.empty(0).is_meta else fail())
    line = error_line(invoke(export_app, "--ckpt", teacher_master, "--steps", 4, "--out", tmp_path / "exported"))
    assert "out of memory allocating a model of" in line
    assert not (tmp_path / "v2").exists() and not (tmp_path / "exported").exists()
