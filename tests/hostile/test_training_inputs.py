"""Hostile mel caches, checkpoints and run folders against `pdd-train`, `pdd-distill`, `pdd-export` and `pdd-eval`:
shard paths out of the cache, absurd index numbers, checkpoint info of the wrong types, and `--force` on folders holding
files the command did not write (the checkpoint being exported, a whole project with `--out .`). One `error:` line each;
nothing the command does not own changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile as sf
import torch

from pdd.export.cli import app as export_app
from pdd.runtime.config import get_preset
from pdd.training.cache import synthetic_piece
from pdd.training.cli_distill import app as distill_app
from pdd.training.cli_eval import app as eval_app
from pdd.training.cli_train import app as train_app

from hostile_checks import Guard, error_line, invoke

FAST = ["--preset", "tiny", "--batch-size", "4", "--warmup-steps", "1", "--preview-every", "0", "--threads", "1",
        "--no-progress", "--log-every", "1"]


def train(cache: Path, out: Path, *extra: object, steps: int = 2) -> Any:
    return invoke(train_app, "--data", cache, "--out", out, "--steps", steps, *FAST, *extra)


def index_edit(change: Callable[[dict, Path], None]) -> Callable[[Path], None]:
    def apply(cache: Path) -> None:
        index = json.loads((cache / "index.json").read_text())
        change(index, cache)
        (cache / "index.json").write_text(json.dumps(index))
    return apply


def shard_outside(index: dict, cache: Path) -> None:
    name = index["splits"]["train"]["file"]
    shutil.copy(cache / name, cache.parent / "outside.bin")
    index["splits"]["train"]["file"] = "../outside.bin"


def shard_absolute(index: dict, cache: Path) -> None:
    index["splits"]["train"]["file"] = "/etc/passwd"


def shard_symlink(index: dict, cache: Path) -> None:
    name = index["splits"]["train"]["file"]
    shutil.copy(cache / name, cache.parent / "outside.bin")
    (cache / name).unlink()
    (cache / name).symlink_to(cache.parent / "outside.bin")


def deep(cache: Path) -> None:
    (cache / "index.json").write_text('{"format": "pdd-melcache/1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


CACHE_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "shard ../outside.bin": (index_edit(shard_outside), "outside"),
    "shard /etc/passwd": (index_edit(shard_absolute), "outside"),
    "shard symlink out of the cache": (index_edit(shard_symlink), "outside"),
    "clips -1": (index_edit(lambda i, c: i["splits"]["train"].update(clips=-1)), "not a count"),
    "clips 'many'": (index_edit(lambda i, c: i["splits"]["train"].update(clips="many")), "not a count"),
    "clips 1e12 (shard too small)": (index_edit(lambda i, c: i["splits"]["train"].update(
        clips=10**12, clip_source=[0], clip_offset=[0])), "clip lists"),
    "sample_rate 1e12": (index_edit(lambda i, c: i["config"].update(sample_rate=10**12)), "over the limit"),
    "source id out of range": (index_edit(lambda i, c: i["splits"]["train"].update(
        clip_source=[10**9] * i["splits"]["train"]["clips"])), "source id"),
    "index nested 100 000 deep": (deep, "nested too deeply"),
    "index invalid UTF-8": (lambda c: (c / "index.json").write_bytes(b'{"format": "\xff\xfe"}'), "not valid JSON"),
    "index is a number": (lambda c: (c / "index.json").write_text("42"), "format"),
}


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_hostile_cache_is_one_error(cache: Path, tmp_path: Path, case: str, one_torch_thread: None) -> None:
    attack, fragment = CACHE_CASES[case]
    attack(cache)
    guard = Guard(tmp_path)
    assert fragment in error_line(train(cache, tmp_path / "run"))
    guard.unchanged(owned=["run/"])


def test_nan_in_the_data_is_named_not_the_learning_rate(cache: Path, tmp_path: Path, one_torch_thread: None) -> None:
    index = json.loads((cache / "index.json").read_text())
    shard = cache / index["splits"]["train"]["file"]
    values = np.fromfile(shard, dtype=np.float16)
    values[::7] = np.nan
    values.tofile(shard)
    guard = Guard(tmp_path)
    line = error_line(train(cache, tmp_path / "run"))
    assert "training data holds NaN/inf" in line and "--lr" not in line
    guard.unchanged(owned=["run/"])


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints


def info_edit(change: Callable[[dict], None]) -> Callable[[Path, Path], Path]:
    def apply(teacher: Path, folder: Path) -> Path:
        state = torch.load(teacher, weights_only=True)
        change(state["info"])
        target = folder / "edited.pt"
        torch.save(state, target)
        return target
    return apply


def expanded_weights(teacher: Path, folder: Path) -> Path:
    """A 16× wider model whose "weights" are one stored value expanded to any size: counting numel would pass it and
    allocate hundreds of MB before failing; counting stored bytes refuses it first."""
    state = torch.load(teacher, weights_only=True)
    state["info"]["model"]["base_channels"] *= 16
    state["model"] = {"w": torch.zeros(1).expand(10**9)}
    state["ema"] = None
    target = folder / "expanded.pt"
    torch.save(state, target)
    return target


def truncated(teacher: Path, folder: Path) -> Path:
    target = folder / "truncated.pt"
    target.write_bytes(teacher.read_bytes()[: teacher.stat().st_size // 2])
    return target


def pickled_code(teacher: Path, folder: Path) -> Path:
    target = folder / "evil.pt"
    torch.save({"format": "pdd-checkpoint/1", "info": {}, "model": {}, "evil": Path("/etc")}, target)
    return target


CKPT_CASES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "train_step 'abc'": (info_edit(lambda i: i.update(train_step="abc")), "incomplete or invalid"),
    "steps 1e9": (info_edit(lambda i: i.update(kind="student", steps=10**9)), "incomplete or invalid"),
    "lineage is a number": (info_edit(lambda i: i.update(lineage=5)), "incomplete or invalid"),
    "audio is a string": (info_edit(lambda i: i.update(audio="paper")), "incomplete or invalid"),
    "model 256× wider than its weights": (info_edit(lambda i: i["model"].update(
        base_channels=i["model"]["base_channels"] * 256)), "needs"),
    "model 4096× wider, past any sane width": (info_edit(lambda i: i["model"].update(
        base_channels=i["model"]["base_channels"] * 4096)), "over 65536"),
    "weights expanded from one stored value": (expanded_weights, "holds 1 values"),
    "num_res_blocks 1000": (info_edit(lambda i: i["model"].update(num_res_blocks=1000)), "over 64"),
    "channel_mults of 10 000 levels": (info_edit(lambda i: i["model"].update(channel_mults=[1] * 10_000)), "over 16"),
    "base_channels 1e12": (info_edit(lambda i: i["model"].update(base_channels=10**12)), "incomplete or invalid"),
    "truncated file": (truncated, "not a readable pdd checkpoint"),
    "pickled Python object": (pickled_code, "not a readable pdd checkpoint"),
}


@pytest.mark.parametrize("command", ["export", "distill"])
@pytest.mark.parametrize("case", list(CKPT_CASES))
def test_hostile_checkpoint_is_one_error(teacher_master: Path, cache: Path, tmp_path: Path, case: str, command: str,
                                         one_torch_thread: None) -> None:
    attack, fragment = CKPT_CASES[case]
    ckpt = attack(teacher_master, tmp_path)
    guard = Guard(tmp_path)
    if command == "export":
        result = invoke(export_app, "--ckpt", ckpt, "--steps", 4, "--out", tmp_path / "engine")
    else:
        result = invoke(distill_app, "--teacher", ckpt, "--data", cache, "--out", tmp_path / "distill", "--from-steps", 8,
                        "--to-steps", 4, "--steps-per-round", 1, "--no-progress")
    assert fragment in error_line(result)
    guard.unchanged(owned=["distill/"])


# ---------------------------------------------------------------------------------------------------------------------
# --force never deletes what the command did not write


def test_export_force_never_deletes_the_checkpoint_being_exported(teacher_master: Path, tmp_path: Path) -> None:
    out = tmp_path / "engine"
    out.mkdir()
    ckpt = shutil.copy(teacher_master, out / "teacher.pt")
    guard = Guard(tmp_path)
    line = error_line(invoke(export_app, "--ckpt", ckpt, "--steps", 4, "--out", out, "--force"))
    assert "lies inside --out" in line
    guard.unchanged()


def test_export_force_into_a_project_folder_refuses_naming_its_files(teacher_master: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "README.md").write_text("my project")
    (project / "src" / "main.py").write_text("print('hi')")
    monkeypatch.chdir(project)
    guard = Guard(tmp_path)
    line = error_line(invoke(export_app, "--ckpt", teacher_master, "--steps", 4, "--out", ".", "--force"))
    assert "did not write" in line and "README.md" in line and "src/main.py" in line
    guard.unchanged()


def test_export_force_refuses_a_bundle_folder_with_a_user_file(bundle: Path, teacher_master: Path, tmp_path: Path) -> None:
    (bundle / "my-notes.txt").write_text("keep")
    guard = Guard(tmp_path)
    line = error_line(invoke(export_app, "--ckpt", teacher_master, "--steps", 4, "--out", bundle, "--force"))
    assert "my-notes.txt" in line
    guard.unchanged()


def test_export_force_refuses_a_bundle_whose_files_were_edited(bundle: Path, teacher_master: Path, tmp_path: Path) -> None:
    with open(bundle / "golden.npz", "ab") as handle:
        handle.write(b"the user's edit")
    guard = Guard(tmp_path)
    assert "golden.npz" in error_line(invoke(export_app, "--ckpt", teacher_master, "--steps", 4, "--out", bundle, "--force"))
    guard.unchanged()


def test_export_force_refuses_a_triton_folder_it_did_not_write(teacher_master: Path, tmp_path: Path) -> None:
    triton = tmp_path / "triton"
    (triton / "other_model" / "1").mkdir(parents=True)
    (triton / "other_model" / "config.pbtxt").write_text("someone else's model")
    guard = Guard(tmp_path)
    line = error_line(invoke(export_app, "--ckpt", teacher_master, "--steps", 4, "--out", tmp_path / "engine",
                             "--triton", triton, "--force"))
    assert "other_model/config.pbtxt" in line
    guard.unchanged()


@pytest.mark.parametrize("planted", ["notes.txt", "previews/step-0000002-0.wav", "checkpoints/step-0000002.pt",
                                     "log.jsonl"])
def test_train_force_refuses_user_files_even_named_like_its_own(cache: Path, tmp_path: Path, planted: str,
                                                                 one_torch_thread: None) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    (out / planted).write_text("the user's")
    guard = Guard(tmp_path)
    assert planted in error_line(train(cache, out, "--force"))
    guard.unchanged()


def test_distill_and_eval_force_refuse_user_files(teacher_master: Path, cache: Path, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for seed in range(2):
        sf.write(str(music / f"{seed}.wav"), synthetic_piece(get_preset("tiny"), 2.0, seed=seed), 16000)
    for app, args in ((distill_app, ["--teacher", teacher_master, "--data", cache, "--from-steps", 8, "--to-steps", 4]),
                      (eval_app, ["--generated", music, "--reference", music, "--preset", "tiny", "--no-fd-bp"])):
        out = tmp_path / f"out-{app.info.name or id(app)}"
        out.mkdir()
        (out / "table.md").write_text("the user's table")
        guard = Guard(tmp_path)
        assert "table.md" in error_line(invoke(app, *args, "--out", out, "--force"))
        guard.unchanged()


def test_invalid_utf8_in_the_log_does_not_stop_a_resume(cache: Path, tmp_path: Path, one_torch_thread: None) -> None:
    out = tmp_path / "run"
    first = train(cache, out)
    assert first.exit_code == 0, first.output
    with open(out / "log.jsonl", "ab") as handle:
        handle.write(b'{"step": 1, "loss": "\xff\xfe"}\n' + b"[" * 100_000 + b"\n")
    resumed = train(cache, out, "--resume", steps=3)
    assert resumed.exit_code == 0, resumed.output
    assert "Traceback" not in resumed.output


def test_a_run_record_of_the_wrong_shape_is_one_error(cache: Path, tmp_path: Path, one_torch_thread: None) -> None:
    out = tmp_path / "run"
    assert train(cache, out).exit_code == 0
    (out / "run.json").write_bytes(b'{"train": "\xff"}')
    guard = Guard(tmp_path)
    assert "run file" in error_line(train(cache, out, "--resume", steps=3))
    guard.unchanged()


TRAINING_COUNT_CASES: dict[str, tuple[str, list[object], str]] = {
    "train --batch-size 1e9": ("train", ["--batch-size", 10**9], "batch-size must be <="),
    "train --steps 1e21": ("train", ["--steps", 10**21], "steps must be <="),
    "train --preview-clips 1e9": ("train", ["--preview-clips", 10**9, "--preview-every", 1], "preview-clips must be <="),
    "train --threads 1e5": ("train", ["--threads", 10**5], "threads must be in"),
    "train --lr nan": ("train", ["--lr", "nan"], "lr must be a positive number"),
    "distill --batch-size 1e9": ("distill", ["--batch-size", 10**9], "batch size must be <="),
    "distill --from-steps 2^40": ("distill", ["--from-steps", 2**40, "--to-steps", 1], "from-steps <="),
    "distill --lr nan": ("distill", ["--lr", "nan"], "learning rate must be positive"),
    "eval -k 1e9": ("eval", ["-k", 10**9], "-k <= 4096"),
    "eval --gl-iters 1e12": ("eval", ["--gl-iters", 10**12], "Griffin-Lim iterations <= 1000"),
    "eval --threads 1e5": ("eval", ["--threads", 10**5], "--threads must be in"),
}


@pytest.mark.parametrize("case", list(TRAINING_COUNT_CASES))
def test_hostile_training_counts(teacher_master: Path, cache: Path, tmp_path: Path, case: str) -> None:
    command, args, fragment = TRAINING_COUNT_CASES[case]
    guard = Guard(tmp_path)
    if command == "train":
        base = ["--data", cache, "--out", tmp_path / "run", "--preset", "tiny", "--no-progress"]
        result = invoke(train_app, *base, *(["--steps", 1] if "--steps" not in args else []), *args)
    elif command == "distill":
        result = invoke(distill_app, "--teacher", teacher_master, "--data", cache, "--out", tmp_path / "d", *args)
    else:
        result = invoke(eval_app, "--teacher", teacher_master, "--data", cache, "--out", tmp_path / "e", *args)
    assert fragment in error_line(result)
    guard.unchanged()
