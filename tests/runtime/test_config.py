"""Audio presets: sizes the rest of the system relies on, JSON round trip, validation errors."""

import pytest

from pdd.runtime.config import PRESETS, AudioConfig, get_preset
from pdd.runtime.errors import ConfigError, PddError


def test_paper_preset_matches_design():
    cfg = get_preset("paper")
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.frames, cfg.pack_chunks) == (22050, 2048, 512, 128, 384, 3)
    assert cfg.packed_shape == (384, 128)
    assert cfg.clip_samples == 383 * 512
    assert cfg.clip_seconds == pytest.approx(8.89, abs=0.01)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name):
    cfg = get_preset(name)
    assert AudioConfig.from_json(cfg.to_json()) == cfg


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="paper"):
        get_preset("nope")


@pytest.mark.parametrize(
    "change",
    [{"frames": 100}, {"hop_length": 0}, {"win_length": 4096}, {"fmin": 20000.0}, {"sample_rate": -1}, {"top_db": 0.0}],
)
def test_invalid_configs_are_refused(change):
    with pytest.raises(PddError):
        AudioConfig(**{**get_preset("paper").to_dict(), **change})


def test_unknown_fields_and_bad_json_are_refused():
    with pytest.raises(ConfigError, match="unknown"):
        AudioConfig.from_dict({**get_preset("tiny").to_dict(), "colour": "blue"})
    with pytest.raises(ConfigError, match="JSON"):
        AudioConfig.from_json("{not json")
