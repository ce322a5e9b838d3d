"""The symbolic prior: the event language (round trip, grammar), the transformer's cached step against its full forward,
the selection of works (default composers only, held-out works never read), training with exact resume, and a tiny prior
that learns stepwise melody from synthetic scales."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pdd.runtime import events as E
from pdd.runtime.prior_sampler import PriorSettings, events_to_notes, nucleus_sample
from pdd.runtime.errors import ConfigError
from pdd.training.corpus import DEFAULT_COMPOSERS, select_works
from pdd.training.prior import EventPrior, prior_config
from pdd.training.prior_data import WindowSampler, is_validation
from pdd.training.prior_torch import sample_with_torch
from pdd.training.prior_train import PriorTrainConfig, load_prior, train_prior
from pdd.training.score_notes import ScoresError, load_scores, write_scores


def scale_work(length: int, seed: int) -> np.ndarray:
    """A stepwise C-major line in eighth notes (6 ticks) over a held bass: (onset, duration, pitch) ticks."""
    degrees = [0, 2, 4, 5, 7, 9, 11, 12, 14, 16, 17, 19, 21, 23, 24]
    rng = np.random.default_rng(seed)
    position, direction, rows = int(rng.integers(3, 12)), 1, []
    for k in range(length):
        rows.append((6 * k, 6, 60 + degrees[position]))
        if k % 8 == 0:
            rows.append((6 * k, 48, 48))
        if not 0 <= position + direction < len(degrees):
            direction = -direction
        position += direction
    return np.asarray(rows, dtype=np.int32)


@pytest.fixture(scope="module")
def scale_scores(tmp_path_factory):
    root = tmp_path_factory.mktemp("scores")
    write_scores(root, [(f"bach/scale{i}", "bach", scale_work(200, i), 100.0) for i in range(30)])
    return root


def test_events_round_trip_and_obey_their_grammar():
    notes = np.array([[0, 12, 72], [0, 24, 60], [0, 6, 64], [12, 12, 74], [60, 7, 50], [60, 3, 10]], dtype=np.int64)
    tokens = E.encode(notes)
    back = E.decode(tokens)
    kept = notes[notes[:, 2] >= E.LOW_PITCH]
    expected = sorted((int(o), E.DURATIONS[int(np.argmin(np.abs(np.asarray(E.DURATIONS) - d)))], int(p)) for o, d, p in kept)
    assert sorted(map(tuple, back.tolist())) == expected
    assert [E.note_of(t)[0] for t in tokens[:3]] == [72, 64, 60]  # top voice first
    assert E.elapsed_ticks(tokens) == 60  # 12 + 48 (two shifts: 24 is the longest)
    last = E.BOS
    for token in tokens:
        assert E.allowed_next(int(last))[int(token)]
        last = token
    assert not E.allowed_next(E.BOS)[E.shift_token(1)]  # clips start on a note
    assert not E.allowed_next(E.note_token(60, 12))[E.note_token(61, 12)]  # pitches fall within an onset


def test_nucleus_sampling_keeps_only_allowed_and_likely_tokens():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 2000))
    allowed = np.ones_like(logits, dtype=bool)
    allowed[:, 0] = False
    picks = nucleus_sample(logits, allowed, 1.0, 0.8, rng)
    assert set(picks.tolist()) <= {1, 2}  # 0 masked; 3 outside the nucleus (0.6 + 0.3 covers 0.8 after renormalising)
    assert 0.6 < np.mean(picks == 1) < 0.74


def test_cached_step_reproduces_the_full_forward():
    torch.manual_seed(0)
    model = EventPrior(prior_config("tiny")).eval()
    tokens = torch.randint(0, E.VOCAB_SIZE, (2, 30))
    with torch.no_grad():
        full = model(tokens)
        keys, values = model.empty_cache(2)
        for position in range(30):
            logits, keys, values = model.step(tokens[:, position], torch.tensor([position]), keys, values)
            torch.testing.assert_close(logits, full[:, position], atol=2e-5, rtol=1e-4)


def test_scores_hold_only_default_composers_and_held_out_works_are_never_read(scale_scores, tmp_path):
    # the selection the prior reads: every work is by a default composer, and none by anyone else
    works = select_works(DEFAULT_COMPOSERS)
    assert {w.composer for w in works} <= set(DEFAULT_COMPOSERS)
    assert not any(w.id.split("/")[0] not in DEFAULT_COMPOSERS for w in works)
    write_scores(tmp_path / "foreign", [("monteverdi/x", "monteverdi", scale_work(20, 0), 100.0)])
    with pytest.raises(ScoresError, match="outside the selection: monteverdi"):
        load_scores(tmp_path / "foreign")
    scores = load_scores(scale_scores)
    held = frozenset({"bach/scale0", "bach/scale1"})
    train = WindowSampler(scores, 64, "train", held)
    val = WindowSampler(scores, 64, "val", held)
    chosen = {scores.works[i] for i in (*train.work_indices, *val.work_indices)}
    assert not chosen & held and len(chosen) == 28
    assert all(is_validation(scores.works[i]) for i in val.work_indices)
    window = train.window(np.random.default_rng(0))
    assert window.shape == (64,) and window[0] == E.BOS


def test_damaged_scores_are_one_error(tmp_path):
    write_scores(tmp_path, [("bach/a", "bach", scale_work(20, 0), 100.0)])
    listing = json.loads((tmp_path / "scores.json").read_text())
    listing["works"].append({"id": "bach/b", "composer": "bach"})
    (tmp_path / "scores.json").write_text(json.dumps(listing))
    with pytest.raises(ScoresError, match="shapes"):
        load_scores(tmp_path)


def test_a_tiny_prior_learns_stepwise_melody_and_resumes_exactly(scale_scores, tmp_path):
    given = dict(data=str(scale_scores), preset="tiny", steps=300, batch_size=16, lr=3e-3, warmup_steps=20,
                 log_every=10, checkpoint_every=100, threads=1)  # fmt: skip
    train_prior(PriorTrainConfig(**given), tmp_path / "run", log=lambda _: None)
    model, state = load_prior(tmp_path / "run" / "prior.pt")
    settings = PriorSettings(temperature=0.7, top_p=0.8, bpm=100)
    sequences = sample_with_torch(model, 4, settings.ticks_for(6.0), settings, np.random.default_rng(0))
    steps, moves = 0, 0
    for tokens in sequences:
        notes = events_to_notes(tokens, 100.0, 6.0)
        tops = [notes["pitch"][notes["onset"] == t].max() for t in np.unique(notes["onset"])]
        intervals = np.abs(np.diff(tops))
        moves += int(np.count_nonzero(intervals))
        steps += int(np.count_nonzero((intervals >= 1) & (intervals <= 2)))
    assert moves > 20 and steps / moves > 0.45, (steps, moves)  # real scales: 1.0; learned without pitch features: 0.17

    # resume: stopped at step 200, resumed to 300 → the same weights as the straight run
    train_prior(PriorTrainConfig(**given), tmp_path / "split", log=lambda _: None, stop_at=200)
    train_prior(PriorTrainConfig(**given), tmp_path / "split", resume=True, log=lambda _: None)
    resumed, _ = load_prior(tmp_path / "split" / "prior.pt")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value)
    with pytest.raises(ConfigError):
        PriorTrainConfig(data="x", preset="huge")
    with pytest.raises(ConfigError):
        PriorSettings(bpm=1000).validate()
