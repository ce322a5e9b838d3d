"""Tests for pdd.training.evaluate: held-out splits, reference audio, the quality-vs-steps table, folder scoring."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from pdd.runtime.audio import write_audio
from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.runtime.mel import log_mel
from pdd.training.cache import open_cache, synthetic_piece, write_synthetic_cache
from pdd.training.checkpoint import CheckpointInfo, make_checkpoint_state, save_checkpoint
from pdd.training.distill import distill, prepare_distill_run
from pdd.training.evaluate import EvalSettings, evaluate_folders, evaluate_models
from pdd.training.heldout import Scorer, held_out_sets, split_by_source
from pdd.training.prepare import PrepareParams, prepare_cache
from pdd.training.unet1d import UNet1D, unet_config

TINY = get_preset("tiny")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
HAVE_BASIC_PITCH = importlib.util.find_spec("basic_pitch") is not None




def test_split_by_source_keeps_files_whole_and_halves_balanced():
    ids = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 5])
    a, b = split_by_source(ids, seed=0)[:2]
    assert set(a).isdisjoint(b) and sorted([*a, *b]) == list(range(ids.size))
    assert set(ids[a]).isdisjoint(ids[b])  # no source file on both sides
    assert abs(a.size - b.size) <= 3
    single = split_by_source(np.zeros(7, dtype=int), seed=0)
    assert single[2] is False and set(single[0]).isdisjoint(single[1]) and single[0].size + single[1].size == 7


def test_scorer_is_zero_on_its_own_reference_and_grows_for_other_music():
    waves = [synthetic_piece(TINY, 1.5, seed=s) for s in range(6)]
    scorer = Scorer(TINY, [log_mel(w, TINY) for w in waves], waves, embedder=None)
    same = scorer.score(waves)
    assert same["fd_mel"] == pytest.approx(0.0, abs=1e-6) and same["fd_bp"] is None
    quieter = scorer.score([w * 0.1 for w in waves])  # −20 dB
    assert quieter["fd_mel"] > 100
    assert same["kad"] is None and same["structure"] is None  # no Basic Pitch, no transcription


@pytest.mark.skipif(not HAVE_BASIC_PITCH, reason="KAD and structure need basic-pitch")
def test_scorer_with_basic_pitch_adds_kad_and_structure_against_its_reference():
    from pdd.training.basic_pitch import BasicPitchEmbedder

    waves = [synthetic_piece(TINY, 3.0, seed=s) for s in range(4)]
    scorer = Scorer(TINY, [log_mel(w, TINY) for w in waves], waves, BasicPitchEmbedder(threads=1))
    same = scorer.score(waves)
    assert set(same["structure"]) == set(same["structure_x_real"]) and same["structure"]["note_density"] > 1
    assert all(v == pytest.approx(1.0) for v in same["structure_x_real"].values() if v is not None)
    assert same["kad"] < 0  # unbiased: a set against itself scores below zero
    t = np.arange(int(3.0 * TINY.sample_rate)) / TINY.sample_rate
    drone = [(0.3 * np.sin(2 * np.pi * 220 * (1 + 0.01 * s) * t)).astype(np.float32) for s in range(4)]
    other = scorer.score(drone)  # one held tone per clip: no beat, no tune, almost no notes
    assert other["kad"] > 0.01 and other["fd_bp"] > same["fd_bp"]
    assert other["structure_x_real"]["note_density"] < 0.3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny teacher checkpoint (random weights) and a distillation folder with student-2 and student-1."""
    root = tmp_path_factory.mktemp("models")
    cache = write_synthetic_cache(root / "cache", TINY, n_train=8, n_heldout=8)
    torch.manual_seed(0)
    config = unet_config("tiny", TINY)
    model = UNet1D(config)
    torch.nn.init.normal_(model.output_conv.weight, std=0.05)
    info = CheckpointInfo(kind="teacher", audio=TINY, model=config, lineage=[{"kind": "teacher", "data": str(cache)}])
    teacher = save_checkpoint(root / "checkpoint.pt", make_checkpoint_state(model, info))
    record = prepare_distill_run(root / "distill", teacher, None,
                                 dict(from_steps=4, to_steps=1, steps_per_round=2, batch_size=2))
    distill(record, root / "distill", device="cpu", progress=False, console_print=False)
    return teacher, root / "distill", cache


def test_quality_table_has_every_row_and_its_files(models, tmp_path):
    teacher, students, cache = models
    settings = EvalSettings(clips=3, steps=(4, 2, 1), reference_steps=4, fd_bp=HAVE_BASIC_PITCH)
    result = evaluate_models(teacher, students, cache, tmp_path / "eval", settings, device="cpu", log=lambda _: None)
    names = [r.name for r in result.rows]
    assert names == ["real vs real", "Griffin-Lim ceiling", "teacher DDIM@4", "teacher DDIM@2", "student@2",
                     "teacher DDIM@1", "student@1"]
    rows = {r.name: r for r in result.rows}
    assert rows["teacher DDIM@4"].fidelity_db == 0.0  # the fidelity reference itself
    assert rows["student@1"].fidelity_db > 0 and rows["student@1"].sample_s_per_clip > 0
    for r in result.rows:
        assert r.fd_mel is not None and r.fd_mel >= 0 and r.flux_mean is not None
        assert (r.fd_bp is not None) == HAVE_BASIC_PITCH
        assert (r.kad is not None) == HAVE_BASIC_PITCH and (r.structure is not None) == HAVE_BASIC_PITCH
    assert [c["steps"] for c in result.comparisons] == [2, 1]
    first = result.comparisons[0]
    assert first["reference_fd_mel"] == rows["teacher DDIM@4"].fd_mel
    assert first["student_better_fidelity_db"] == (rows["student@2"].fidelity_db < rows["teacher DDIM@2"].fidelity_db)
    assert isinstance(first["student_closer_to_reference_fd_mel"], bool)
    out = tmp_path / "eval"
    for name in ("table.md", "table.json", "metrics_vs_steps.png", "spectrograms.png"):
        assert (out / name).is_file()
    assert len(list((out / "wavs" / "student-at-1").glob("*.wav"))) == 3
    table = json.loads((out / "table.json").read_text())
    assert table["format"] == "pdd-eval/1" and len(table["rows"]) == 7
    markdown = (out / "table.md").read_text()
    assert "- student@1 vs teacher DDIM@1: " in markdown
    assert "not VGGish FAD" in markdown or "FD-BP skipped" in markdown
    with pytest.raises(ConfigError, match="already holds files"):
        evaluate_models(teacher, students, cache, out, settings, device="cpu", log=lambda _: None)


def test_reference_audio_is_the_original_when_the_source_folder_exists(tmp_path):
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for i in range(4):
        write_audio(audio_dir / f"piece-{i}.wav", synthetic_piece(TINY, 4.0, seed=i), TINY.sample_rate, subtype="float")
    prepare_cache(audio_dir, tmp_path / "cache", TINY, PrepareParams(heldout_fraction=0.5))
    cache = open_cache(tmp_path / "cache")
    held = held_out_sets(cache, clips=4, reference_clips=8, seed=0)
    assert held.waves_a is not None and held.by_source and "original" in held.audio_note
    np.testing.assert_allclose(log_mel(held.waves_b, TINY), held.mels_b, atol=2e-3)  # float16 cache
    shutil.rmtree(audio_dir)
    fallback = held_out_sets(cache, clips=4, reference_clips=8, seed=0)
    assert fallback.waves_a is None and "Griffin-Lim" in fallback.audio_note


def test_too_few_held_out_clips_is_a_clear_error(tmp_path):
    cache = open_cache(write_synthetic_cache(tmp_path / "c", TINY, n_train=4, n_heldout=2))
    with pytest.raises(ConfigError, match="at least 4"):
        held_out_sets(cache, clips=4, reference_clips=8, seed=0)


def test_folder_scoring_of_any_wavs(tmp_path):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    for i in range(4):
        write_audio(ref / f"r{i}.wav", synthetic_piece(TINY, 2.0, seed=i), TINY.sample_rate)
        write_audio(gen / f"g{i}.wav", synthetic_piece(TINY, 2.0, seed=i), TINY.sample_rate)
    (gen / "broken.wav").write_text("not audio")
    result = evaluate_folders(gen, ref, tmp_path / "out", TINY, fd_bp=False, log=lambda _: None)
    assert result.rows[0].fd_mel == pytest.approx(0.0, abs=1e-6)  # the same music
    assert [r.name for r in result.rows] == ["generated", "real vs real (reference halves)"]
    assert result.rows[1].clips == 2 and result.rows[1].fd_mel > 0  # r0, r2 against r1, r3: different pieces
    assert any("broken.wav" in note for note in result.notes)  # skipped and named, not fatal
    assert "FD-BP disabled" in (tmp_path / "out" / "table.md").read_text()


def test_students_from_several_folders_merge_and_duplicates_are_refused(models, tmp_path):
    from pdd.training.evaluate import collect_students

    _, students, _ = models
    stage2 = tmp_path / "stage2"
    stage2.mkdir()
    (students / "student-1.pt").rename(stage2 / "student-1.pt")
    try:
        merged = collect_students([students, stage2])
        assert list(merged) == [2, 1] and merged[1].parent == stage2
        with pytest.raises(ConfigError, match="two students with 2 steps"):
            collect_students([students, students])
        with pytest.raises(ConfigError, match="no student-N.pt"):
            collect_students([tmp_path / "stage2", tmp_path])
    finally:
        (stage2 / "student-1.pt").rename(students / "student-1.pt")


def _tiny_vocoder(path):
    """A small random learned-vocoder checkpoint on the tiny preset (seeded)."""
    from pdd.training.checkpoint import CHECKPOINT_FORMAT
    from pdd.training.vocoder import VOCODER_GATE, MelVocoder, VocoderConfig, VocoderInfo

    config = VocoderConfig(name="t", dim=16, intermediate=32, layers=1)
    torch.manual_seed(0)
    state = {"format": CHECKPOINT_FORMAT, "kind": "vocoder", "info": VocoderInfo(TINY, config, VOCODER_GATE).to_dict(),
             "model": MelVocoder(TINY, config).state_dict()}
    return save_checkpoint(path, state)


def test_vocoder_rows_sit_beside_griffin_lim_and_leave_comparisons_alone(models, tmp_path):
    teacher, students, cache = models
    vocoder = _tiny_vocoder(tmp_path / "vocoder.pt")
    settings = EvalSettings(clips=3, steps=(2,), reference_steps=4, fd_bp=False, wavs=True)
    result = evaluate_models(teacher, students, cache, tmp_path / "eval", settings, device="cpu", log=lambda _: None,
                             vocoder_ckpt=vocoder)
    names = [r.name for r in result.rows]
    assert names == ["real vs real", "Griffin-Lim ceiling", "vocoder ceiling", "teacher DDIM@2",
                     "teacher DDIM@2 · vocoder", "student@2", "student@2 · vocoder"]
    rows = {r.name: r for r in result.rows}
    assert rows["vocoder ceiling"].vocoder_s_per_clip > 0 and rows["student@2 · vocoder"].fd_mel > 0
    assert rows["student@2 · vocoder"].fidelity_db == rows["student@2"].fidelity_db  # same x̂0, other back end
    assert [c["steps"] for c in result.comparisons] == [2]
    assert result.comparisons[0]["student_fd_mel"] == rows["student@2"].fd_mel  # Griffin-Lim rows are compared
    assert len(list((tmp_path / "eval" / "wavs" / "vocoder-ceiling").glob("*.wav"))) >= 2


def test_vocoder_gate_override_changes_only_the_vocoder_rows(models, tmp_path):
    """`--vocoder-gate` decodes with the gate an engine was exported with: vocoder rows move, Griffin-Lim rows do not."""
    from pdd.runtime.silence import SilenceGate

    teacher, students, cache = models
    vocoder = _tiny_vocoder(tmp_path / "vocoder.pt")
    settings = EvalSettings(clips=3, steps=(2,), reference_steps=4, fd_bp=False, wavs=False)
    runs = {}
    for name, gate in (("trained", None), ("hard", SilenceGate(-0.2, 0.5))):
        result = evaluate_models(teacher, students, cache, tmp_path / name, settings, device="cpu", log=lambda _: None,
                                 vocoder_ckpt=vocoder, vocoder_gate=gate)
        runs[name] = {r.name: r for r in result.rows}
    for row in ("teacher DDIM@2", "student@2", "Griffin-Lim ceiling"):
        assert runs["hard"][row].fd_mel == pytest.approx(runs["trained"][row].fd_mel)
    for row in ("vocoder ceiling", "student@2 · vocoder"):
        assert runs["hard"][row].fd_mel != pytest.approx(runs["trained"][row].fd_mel, rel=1e-3)
