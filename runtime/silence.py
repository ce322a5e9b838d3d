"""The silence gate: normalised log-mel values at or near the −1 floor decode as silence, not as −80 dB in every band.

Why: the front end clips at `-top_db`, so "nothing here" and "−80 dB here" are the same value, −1. Decoded literally, that
floor is a constant mel power in every band, which the pseudo-inverse and Griffin-Lim turn into broadband hiss (measured on
held-out renders: spectral flatness 0.033 against 0.0004 for the originals; FD-BP of real mels through the back end 1.46,
against 0.16 real vs real). A model's x̂0 rarely lands exactly on −1, so the gate is a ramp, not an equality test:

    gain(x) = clip((x − threshold) / knee, 0, 1)

Griffin-Lim multiplies the mel power by `gain` (values at or below `threshold` become zero power); a learned vocoder, which
was trained on real mels whose silence is exactly −1, gets `gated_floor(x) = −1 + (x + 1)·gain`, i.e. the same ramp pulled
onto its floor. The default threshold and knee were measured with `benchmarks/silence_gate.py` (see docs/architecture.md,
"Decode"). Every ONNX vocoder graph repeats this arithmetic with the values the manifest records, and tests pin it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pdd.runtime.errors import ConfigError
from pdd.runtime.jsonconfig import JsonConfig

MIN_KNEE = 1e-3  # normalised units (0.08 dB): far narrower than any gate measured, far wider than float32 rounding


@dataclass(frozen=True)
class SilenceGate(JsonConfig):
    """Where silence starts (`threshold`, normalised units in [-1, 1)) and how wide the ramp to full level is (`knee` > 0)."""

    config_kind: ClassVar[str] = "silence gate"

    threshold: float = -0.6
    knee: float = 0.4

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and isinstance(self.knee, (int, float))):
            raise ConfigError("silence gate threshold and knee must be numbers")
        if any(isinstance(v, int) and abs(v) > 2 for v in (self.threshold, self.knee)):  # float() of a 400-digit int overflows
            raise ConfigError("silence gate threshold and knee must be in [-1, 2], got an integer far outside")
        if not -1.0 <= float(self.threshold) < 1.0:
            raise ConfigError(f"silence gate threshold must be in [-1, 1), got {self.threshold}")
        if not MIN_KNEE <= float(self.knee) <= 2.0:
            # A knee of 1e-300 passes "> 0", then 1/knee overflows to inf and inf·0 = NaN deep inside a decode.
            raise ConfigError(f"silence gate knee must be in (0, 2] and at least {MIN_KNEE:g} (the gate's ramp divides "
                              f"by it), got {self.knee}")

    @classmethod
    def parse(cls, text: str | None, option: str = "--vocoder-gate") -> "SilenceGate | None":
        """A command line's "THRESHOLD,KNEE" (normalised mel units) → SilenceGate; None stays None. ConfigError names
        `option` and the allowed ranges."""
        if text is None:
            return None
        try:
            threshold, knee = (float(part) for part in text.split(","))
            return cls(threshold, knee)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{option} must be THRESHOLD,KNEE with threshold in [-1, 1) and knee in (0, 2], "
                              f"got {text[:40]!r} ({exc})") from None

    @classmethod
    def from_manifest(cls, data: Any) -> "SilenceGate | None":
        """The manifest's `decode.silence_gate` entry: None (no gate) or a SilenceGate."""
        return None if data is None else cls.from_dict(data)


# Griffin-Lim's gate, measured with benchmarks/silence_gate.py (K = 30 held-out clips and 30 clips of the shipped 8-step
# student, Griffin-Lim 32, FD-BP against the other held-out half): gate off 1.75 real / 1.89 generated; (-0.9, 0.1) 0.71 /
# 1.61; (-0.7, 0.2) 0.52 / 1.09; (-0.6, 0.2) 0.49 / 0.91; (-0.6, 0.4) 0.46 / 0.84 (best on real, FD-mel best too);
# (-0.5, 0.2) 0.55 / 0.80; (-0.4, 0.2) 0.79 / 0.75. Below ≈ -0.5 the gate starts to remove music (real FD-BP and FD-mel
# rise again). In dB: silent below −64 dB, full level from −48 dB; Griffin-Lim cannot render quieter detail without hiss.
DEFAULT_GATE = SilenceGate(threshold=-0.6, knee=0.4)


# These three are plain arithmetic on arrays (`.clip` exists on numpy arrays and torch tensors alike), so the runtime, the
# exported graphs and the vocoder's training all run this one definition.
def silence_gain(x: Any, gate: SilenceGate) -> Any:
    """Per-value gain in [0, 1]: 0 at or below the threshold, 1 from threshold + knee up, linear between."""
    return ((x - float(gate.threshold)) * (1.0 / float(gate.knee))).clip(0.0, 1.0)


def gate_power(mel_power: Any, x: Any, gate: SilenceGate | None) -> Any:
    """Mel power of normalised mel `x` with the gate applied (Griffin-Lim's input); unchanged when `gate` is None."""
    return mel_power if gate is None else mel_power * silence_gain(x, gate)


def gated_floor(x: Any, gate: SilenceGate | None) -> Any:
    """Normalised mel with gated values pulled onto the −1 floor (a learned vocoder's input); clipped to [-1, 1]."""
    x = x.clip(-1.0, 1.0)
    return x if gate is None else (x + 1.0) * silence_gain(x, gate) - 1.0
