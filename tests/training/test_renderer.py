"""The conditioned renderer: the U-Net's condition input (zero-initialised, so it starts as the unconditional model),
the (mel, condition) items with shifted rolls, dropout and context masks, and `pdd-train --condition` end to end."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from pdd.runtime.conditioning import ConditionConfig, build_condition, pack_roll
from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.runtime.midi import write_midi
from pdd.runtime.pack import pack
from pdd.runtime.roll import notes_to_roll
from pdd.training.cache import open_cache, write_synthetic_cache
from pdd.training.checkpoint import load_checkpoint, load_denoiser
from pdd.training.cond_data import ConditionDropout, ConditionedDataset, context_mask
from pdd.training.prepare import PrepareParams, prepare_cache
from pdd.training.synthetic_notes import render_notes, scale_notes
from pdd.training.train import TrainConfig, train
from pdd.training.unet1d import UNet1D, unet_config

TINY = get_preset("tiny")
BOTH = ConditionConfig(roll=True, context=True)


@pytest.fixture(scope="module")
def note_cache(tmp_path_factory):
    """A tiny cache of synthetic scale music with its MIDI beside it: clips overlap so random shifts have neighbours."""
    root = tmp_path_factory.mktemp("notes")
    for i in range(6):
        seconds = 4.0 * TINY.clip_seconds
        notes = scale_notes(seconds, seed=i)
        sf.write(str(root / "music" / f"p{i}.wav") if (root / "music").mkdir(exist_ok=True) is None else "",
                 render_notes(notes, TINY.sample_rate, seconds), TINY.sample_rate)  # fmt: skip
        write_midi(root / "music" / f"p{i}.mid", notes)
    prepare_cache(root / "music", root / "cache", TINY,
                  PrepareParams(heldout_fraction=0.2, silence_db=-80, hop_seconds=TINY.clip_seconds / 2))  # fmt: skip
    return root / "cache"


def test_condition_layout_packs_roll_context_and_mask_like_the_mel():
    roll = (np.random.default_rng(0).random((2, 88, TINY.frames)) > 0.9).astype(np.float32)
    mel = np.random.default_rng(1).uniform(-1, 1, (TINY.n_mels, TINY.frames)).astype(np.float32)
    mask = context_mask(TINY.frames, "prefix", 10)
    cond = build_condition(BOTH, TINY, roll, mel, mask)
    chunks, length = TINY.pack_chunks, TINY.frames // TINY.pack_chunks
    assert cond.shape == (BOTH.channels(TINY), length)
    np.testing.assert_array_equal(cond[: chunks * 176], pack_roll(roll, TINY))
    np.testing.assert_array_equal(cond[chunks * 176 : -chunks], pack(mel * mask[None], chunks, TINY.pack_order))
    np.testing.assert_array_equal(cond[-chunks:], pack(mask[None], chunks, TINY.pack_order))
    assert not build_condition(BOTH, TINY).any()  # nothing given: exactly zero
    with pytest.raises(ConfigError):
        build_condition(BOTH, TINY, roll[:, :10])
    with pytest.raises(ConfigError):
        build_condition(BOTH, TINY, None, mel, None)
    assert context_mask(8, "suffix", 3).tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert context_mask(8, "span", 5, start=2).tolist() == [1, 1, 0, 0, 0, 1, 1, 1]


def test_a_new_conditioned_unet_is_the_unconditional_one_and_none_means_zeros():
    torch.manual_seed(0)
    plain = UNet1D(unet_config("tiny", TINY))
    torch.manual_seed(0)
    conditioned = UNet1D(unet_config("tiny", TINY, cond_channels=BOTH.channels(TINY)))
    conditioned.load_state_dict({**conditioned.state_dict(), **plain.state_dict()})
    x, t = torch.randn(2, TINY.packed_channels, TINY.packed_length), torch.tensor([0.3, 0.8])
    cond = torch.randn(2, BOTH.channels(TINY), TINY.packed_length)
    with torch.no_grad():
        torch.testing.assert_close(conditioned(x, t, cond), plain(x, t))  # zero-initialised condition conv
        torch.testing.assert_close(conditioned(x, t), conditioned(x, t, torch.zeros_like(cond)))
        with pytest.raises(ValueError, match="no condition"):
            plain(x, t, cond)
    assert "cond_channels" not in unet_config("tiny", TINY).to_dict()  # old configs serialise as before


def test_items_carry_the_shifted_roll_and_honour_dropout(note_cache):
    cache = open_cache(note_cache)
    data = ConditionedDataset(cache, ConditionConfig(roll=True, context=False), random_shift=True,
                              dropout=ConditionDropout(roll_dropout=0.0, context_prob=0.0))  # fmt: skip
    index = next(i for i in range(len(data)) if data.max_shift(i) > 3)
    shifted = data.shifted_roll(index, 3)
    offset = (cache.offsets("train")[index] + 3 * TINY.hop_length) / TINY.sample_rate
    from pdd.runtime.midi import read_midi

    notes = read_midi(note_cache.parent / "music" / cache.sources("train")[index].replace(".wav", ".mid"))
    np.testing.assert_array_equal(shifted, notes_to_roll(notes, cache.roll_config, start=offset))
    torch.manual_seed(0)
    x, cond = data[index]
    assert x.shape == (TINY.packed_channels, TINY.packed_length) and cond.abs().sum() > 0
    dropped = ConditionedDataset(cache, BOTH, dropout=ConditionDropout(roll_dropout=1.0, context_prob=0.0))
    assert not dropped[index][1].any()
    with pytest.raises(ConfigError, match="no piano rolls"):
        ConditionedDataset(write_synthetic_cache(note_cache.parent / "plain", TINY), BOTH)


def test_pdd_train_condition_trains_a_renderer_whose_notes_matter(note_cache, tmp_path):
    config = TrainConfig(data=str(note_cache), preset="tiny", batch_size=8, lr=2e-3, warmup_steps=5, ema_decay=0.9,
                         preview_every=0, threads=1, log_every=5, steps=60, checkpoint_every=30, condition="notes+context")  # fmt: skip
    result = train(config, tmp_path / "run", progress=False)
    state = load_checkpoint(result.checkpoint)
    assert state["extra"]["condition"] == BOTH.to_dict() and state["extra"]["roll"]["n_pitches"] == 88
    model, info = load_denoiser(result.checkpoint)
    assert info.model.cond_channels == BOTH.channels(TINY)
    assert float(model.cond_conv.weight.abs().sum()) > 0  # the notes path learned something
    with pytest.raises(ConfigError, match="condition"):
        TrainConfig(data="x", condition="lyrics")


def test_a_conditioned_teacher_distils_with_guidance_baked_into_a_conditioned_student(note_cache, tmp_path):
    from pdd.training.distill import distill, prepare_distill_run
    from pdd.training.distill_round import guided

    config = TrainConfig(data=str(note_cache), preset="tiny", batch_size=8, lr=2e-3, warmup_steps=2, ema_decay=0.9,
                         preview_every=0, threads=1, log_every=5, steps=20, checkpoint_every=10, condition="notes")  # fmt: skip
    teacher = train(config, tmp_path / "teacher", progress=False).checkpoint
    record = prepare_distill_run(tmp_path / "students", teacher, str(note_cache),
                                 dict(from_steps=8, to_steps=4, steps_per_round=6, batch_size=4, guidance=2.0),
                                 resume=False, force=False)  # fmt: skip
    result = distill(record, tmp_path / "students", threads=1, progress=False, console_print=False)
    student_path = result.students[4]
    state = load_checkpoint(student_path)
    assert state["extra"]["condition"] == ConditionConfig(roll=True, context=False).to_dict()
    student, info = load_denoiser(student_path)
    assert info.steps == 4 and info.model.cond_channels == ConditionConfig(roll=True, context=False).channels(TINY)
    # guidance: 1 is the conditional model itself, 0 the null condition's, 2 extrapolates past the conditional one
    teacher_model, _ = load_denoiser(teacher)
    z, t = torch.randn(2, TINY.packed_channels, TINY.packed_length), torch.tensor([0.5, 0.5])
    cond = torch.rand(2, info.model.cond_channels, TINY.packed_length)
    null = torch.zeros_like(cond)
    with torch.no_grad():
        v_c, v_n = teacher_model(z, t, cond), teacher_model(z, t, null)
        torch.testing.assert_close(guided(teacher_model, cond, null, 1.0)(z, t), v_c)
        torch.testing.assert_close(guided(teacher_model, cond, null, 2.0)(z, t), v_n + 2.0 * (v_c - v_n))
