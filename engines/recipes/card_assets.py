"""Listening samples for a model card: generate clips with `pdd-run`, keep a few seconds of each as OGG Vorbis with its
spectrogram PNG, and check each for harmonic structure (so "sounds like music" is measured, not only claimed).

    python engines/recipes/card_assets.py --engine engines/small-piano --seeds 0,1,2,3 --seconds 6 --vocoders neural,gl

With several back ends each sample is written once per vocoder (seed-N-neural.ogg, seed-N-gl.ogg), so a card can put them
side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from pdd.runtime.bundle import load_bundle
from pdd.runtime.mel import log_mel
from pdd.runtime.plots import save_spectrogram_png


def harmonicity(wave: np.ndarray, rate: int) -> float:
    """Peak-to-median ratio (dB) of the long-term spectrum below 4 kHz: ~0-10 dB for noise, 20+ dB for pitched notes."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    band = spectrum[: int(len(spectrum) * 4000 / (rate / 2))]
    return float(20 * np.log10(np.percentile(band, 99.9) / (np.median(band) + 1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", default=None, help="default: ENGINE/samples")
    parser.add_argument("--vocoders", default="auto", help="comma-separated pdd-run --vocoder values (one file each)")
    args = parser.parse_args()

    engine = Path(args.engine)
    bundle = load_bundle(engine)
    out = Path(args.out) if args.out else engine / "samples"
    out.mkdir(parents=True, exist_ok=True)
    rate = bundle.audio.sample_rate
    report = []
    vocoders = [v for v in args.vocoders.split(",") if v]
    for vocoder in vocoders:
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run(
                    [sys.executable, "-m", "pdd.runtime.cli_run", "--engine", str(engine), "-n", "1", "--seed", str(seed),
                     "--out", tmp, "-q", "--vocoder", vocoder],
                    check=True,
                )
                wave, _ = sf.read(Path(tmp) / f"pdd-{seed}-0.wav", dtype="float32")
            excerpt = wave[: int(args.seconds * rate)]
            stem = f"seed-{seed}" if len(vocoders) == 1 else f"seed-{seed}-{vocoder}"
            ogg = out / f"{stem}.ogg"
            sf.write(ogg, excerpt, rate, format="OGG", subtype="VORBIS")
            save_spectrogram_png(out / f"{stem}.png", log_mel(wave, bundle.audio), bundle.audio, title=f"seed {seed}, {vocoder}")
            report.append({"seed": seed, "vocoder": vocoder, "file": ogg.name, "seconds": len(excerpt) / rate,
                           "peak_dbfs": float(20 * np.log10(np.abs(wave).max() + 1e-12)),
                           "harmonicity_db": harmonicity(wave, rate)})
    (out / "samples.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
