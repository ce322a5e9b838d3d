"""Checkpoints: atomic save, weights_only load, refusal of foreign/corrupt files and mismatched configs, EMA-first loading."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal

import pytest
import torch

from pdd.runtime.config import get_preset
from pdd.runtime.errors import PddError
from pdd.training.checkpoint import (
    build_model,
    CheckpointError,
    CheckpointInfo,
    check_compatible,
    checkpoint_info,
    load_checkpoint,
    load_denoiser,
    make_checkpoint_state,
    save_checkpoint,
)
from pdd.training.ema import EMA
from pdd.training.unet1d import UNet1D, unet_config

TINY = get_preset("tiny")


def tiny_model(seed: int = 0) -> UNet1D:
    torch.manual_seed(seed)
    model = UNet1D(unet_config("tiny", TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def teacher_info(model: UNet1D, step: int = 7) -> CheckpointInfo:
    return CheckpointInfo(kind="teacher", audio=TINY, model=model.config, steps=None,
                          lineage=[{"kind": "teacher", "data": "synthetic"}], train_step=step)


def test_round_trip_keeps_info_weights_optimizer_and_rng(tmp_path) -> None:
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, *TINY.packed_shape), torch.rand(2)).pow(2).mean().backward()
    opt.step()
    state = make_checkpoint_state(model, teacher_info(model), optimizer=opt, rng={"torch": torch.get_rng_state()})
    path = save_checkpoint(tmp_path / "teacher.pt", state)
    assert [p.name for p in tmp_path.iterdir()] == ["teacher.pt"]  # no temp file left behind

    loaded = load_checkpoint(path)
    info = checkpoint_info(loaded)
    assert info == teacher_info(model)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded["model"][name], value)
    assert loaded["optimizer"]["state"]  # Adam moments survive
    assert torch.equal(loaded["rng"]["torch"], torch.get_rng_state())


def test_load_denoiser_prefers_ema_weights_and_is_in_eval_mode(tmp_path) -> None:
    model = tiny_model(0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # model and EMA now differ
    save_checkpoint(tmp_path / "c.pt", make_checkpoint_state(model, teacher_info(model), ema=ema))
    loaded, info = load_denoiser(tmp_path / "c.pt")
    assert not loaded.training and info.kind == "teacher"
    for name, value in ema.weights().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)


def test_student_checkpoint_records_its_steps(tmp_path) -> None:
    model = tiny_model()
    info = CheckpointInfo(kind="student", audio=TINY, model=model.config, steps=8, lineage=[{"kind": "teacher"}])
    save_checkpoint(tmp_path / "student-8.pt", make_checkpoint_state(model, info, ema=model))
    _, loaded = load_denoiser(tmp_path / "student-8.pt")
    assert loaded.kind == "student" and loaded.steps == 8
    with pytest.raises(CheckpointError, match="step count"):
        CheckpointInfo(kind="student", audio=TINY, model=model.config, steps=None)


def test_corrupt_truncated_and_foreign_files_are_one_line_errors(tmp_path) -> None:
    model = tiny_model()
    good = save_checkpoint(tmp_path / "good.pt", make_checkpoint_state(model, teacher_info(model)))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(pickle.Pickler))  # a global weights_only must refuse
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"obj": pickle.Pickler}, unsafe)  # a real torch zip file whose pickle names a global
    for path in (truncated, text, foreign, evil, unsafe, tmp_path / "missing.pt"):
        with pytest.raises(PddError) as err:
            load_checkpoint(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value) and len(str(err.value)) < 300
    with pytest.raises(PddError, match="not a PyTorch checkpoint file"):
        load_checkpoint(text)
    with pytest.raises(PddError, match="weights_only loading refuses"):
        load_checkpoint(unsafe)


def test_another_preset_or_config_is_refused() -> None:
    model = tiny_model()
    info = teacher_info(model)
    check_compatible(info, TINY, model.config)
    with pytest.raises(CheckpointError, match="audio preset 'tiny'"):
        check_compatible(info, get_preset("paper"), model.config)
    other = unet_config("tiny", TINY, base_channels=16)
    with pytest.raises(CheckpointError, match="base_channels"):
        check_compatible(info, TINY, other)


def test_save_refuses_dicts_it_did_not_build(tmp_path) -> None:
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "x.pt", {"model": {}})


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    model = tiny_model()
    path = save_checkpoint(tmp_path / "c.pt", make_checkpoint_state(model, teacher_info(model, step=1)))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="the disk is full; the previous checkpoint is unchanged"):
        save_checkpoint(path, make_checkpoint_state(model, teacher_info(model, step=2)))
    monkeypatch.undo()
    assert checkpoint_info(load_checkpoint(path)).train_step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_an_interrupt_inside_torch_save_waits_for_a_whole_checkpoint(tmp_path, monkeypatch) -> None:
    """SIGINT arriving mid-save: the checkpoint is finished and installed, then KeyboardInterrupt; no temp is left."""
    model = tiny_model()
    real_save = torch.save

    def interrupted_save(obj, handle, *args, **kwargs):
        handle.write(b"PK")  # the first bytes of the zip, then the signal, as a real interrupt would land
        handle.seek(0)
        os.kill(os.getpid(), signal.SIGINT)
        real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.pt", make_checkpoint_state(model, teacher_info(model, step=3)))
    monkeypatch.undo()
    assert checkpoint_info(load_checkpoint(tmp_path / "c.pt")).train_step == 3
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize("field, value", [
    ("train_step", "abc"), ("train_step", -1), ("steps", "8"), ("steps", 10**9), ("lineage", 5), ("audio", "paper"),
    ("kind", ["teacher"]), ("model", None), ("audio", {"name": "x", "sample_rate": 10**12}),
])
def test_info_of_the_wrong_type_or_size_is_one_checkpoint_error(field, value) -> None:
    model = tiny_model()
    data = teacher_info(model, step=1).to_dict()
    data[field] = value
    with pytest.raises(CheckpointError, match="incomplete or invalid"):
        CheckpointInfo.from_dict(data)


def test_a_model_config_bigger_than_its_weights_is_refused_before_allocation(tmp_path) -> None:
    model = tiny_model()
    info = teacher_info(model, step=1)
    huge = dataclasses.replace(info.model, base_channels=info.model.base_channels * 4096)
    with pytest.raises(CheckpointError, match="needs .* parameters, the file holds"):
        build_model(dataclasses.replace(info, model=huge), model.state_dict())
