"""Griffin-Lim vs its FFT floor, measured side by side (interleaved) in one run.

The floor of one Griffin-Lim iteration is one rfft + one irfft over all frames (the rest is element-wise work), so
`n_iter` iterations cost at least n_iter × that pair plus one final irfft. Prints medians, the ratio and the FFT FLOP count.

    python benchmarks/griffinlim_floor.py --preset paper --iters 32 --repeats 15
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import scipy.fft

from pdd.runtime.config import get_preset
from pdd.runtime.griffinlim import griffin_lim
from pdd.runtime.spectral import fft_workers


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--iters", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    cfg = get_preset(args.preset)
    rng = np.random.default_rng(0)
    mag = np.abs(rng.normal(size=(cfg.n_freqs, cfg.frames))).astype(np.float32)
    frames = rng.normal(size=(cfg.frames, cfg.n_fft)).astype(np.float32)
    spectrum = scipy.fft.rfft(frames, axis=-1)
    workers = fft_workers()

    def fft_floor() -> None:
        for _ in range(args.iters):
            scipy.fft.rfft(frames, axis=-1, workers=workers)
            scipy.fft.irfft(spectrum, n=cfg.n_fft, axis=-1, workers=workers)
        scipy.fft.irfft(spectrum, n=cfg.n_fft, axis=-1, workers=workers)

    def gl() -> None:
        griffin_lim(mag, cfg, n_iter=args.iters)

    gl(), fft_floor()  # warm-up: plans, caches
    gl_times, floor_times = [], []
    for _ in range(args.repeats):  # interleaved A/B so machine noise hits both alike
        gl_times.append(_timed(gl))
        floor_times.append(_timed(fft_floor))
    ratios = np.array(gl_times) / np.array(floor_times)
    # real FFT of size n ≈ 2.5·n·log2(n) flops; forward + inverse per iteration
    flops = (2 * args.iters + 1) * cfg.frames * 2.5 * cfg.n_fft * math.log2(cfg.n_fft)
    result = {
        "preset": cfg.name,
        "audio_seconds": cfg.clip_seconds,
        "iters": args.iters,
        "fft_workers": workers,
        "gl_ms_p50": 1e3 * float(np.median(gl_times)),
        "fft_floor_ms_p50": 1e3 * float(np.median(floor_times)),
        "ratio_p50": float(np.median(ratios)),
        "ratio_p10_p90": [float(np.percentile(ratios, 10)), float(np.percentile(ratios, 90))],
        "fft_gflop": flops / 1e9,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
