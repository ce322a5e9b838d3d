"""The silence gate: pinned values, validation, and what it does to a decode (the floor becomes silence)."""

from __future__ import annotations

import numpy as np
import pytest

from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.runtime.griffinlim import mel_to_audio
from pdd.runtime.silence import DEFAULT_GATE, SilenceGate, gate_power, gated_floor, silence_gain


def test_gain_is_a_linear_ramp_pinned_to_literal_values() -> None:
    gate = SilenceGate(threshold=-0.6, knee=0.4)
    x = np.array([-1.0, -0.6, -0.5, -0.4, -0.2, 0.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(silence_gain(x, gate), [0.0, 0.0, 0.25, 0.5, 1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(gated_floor(x, gate), [-1.0, -1.0, -0.875, -0.7, -0.2, 0.0, 1.0], atol=1e-6)
    assert DEFAULT_GATE == SilenceGate(-0.6, 0.4)  # measured: docs/architecture.md, "Decode"


def test_no_gate_changes_nothing_but_the_clip() -> None:
    x = np.array([-1.3, -0.99, 0.5, 1.2], dtype=np.float32)
    power = np.ones(4, dtype=np.float32)
    assert gate_power(power, x, None) is power
    np.testing.assert_allclose(gated_floor(x, None), [-1.0, -0.99, 0.5, 1.0], atol=1e-7)


@pytest.mark.parametrize("threshold, knee", [(-1.5, 0.1), (1.0, 0.1), (-0.5, 0.0), (-0.5, 3.0), ("a", 0.1)])
def test_bad_gates_are_refused(threshold, knee) -> None:
    with pytest.raises(ConfigError):
        SilenceGate(threshold, knee)


def test_manifest_round_trip_refuses_unknown_fields() -> None:
    assert SilenceGate.from_manifest(None) is None
    assert SilenceGate.from_manifest({"threshold": -0.7, "knee": 0.2}) == SilenceGate(-0.7, 0.2)
    with pytest.raises(ConfigError, match="unknown silence gate fields"):
        SilenceGate.from_manifest({"threshold": -0.7, "knee": 0.2, "ratio": 4})


def test_a_floor_mel_decodes_to_silence_only_with_the_gate() -> None:
    """The bug the gate fixes: an all-floor mel decoded literally is broadband hiss at -80 dB, not silence."""
    audio = get_preset("tiny")
    floor = np.full((audio.n_mels, audio.frames), -1.0, dtype=np.float32)
    hiss = mel_to_audio(floor, audio, n_iter=4, gate=None)
    assert np.sqrt(np.mean(hiss**2)) > 1e-5
    np.testing.assert_array_equal(mel_to_audio(floor, audio, n_iter=4), np.zeros_like(hiss))
