"""Measure the silence gate: FD-BP / FD-mel of Griffin-Lim decodes for a grid of (threshold, knee), real and generated mels.

Real: held-out clips of a mel cache (`pdd-data prepare`), scored against the other held-out half's original audio (the
cache's source folder must be present). Generated: an engine bundle's x̂0 from seeds 0..K-1 (its fused sampler on the CPU).
"gate off" is today's literal decode of the floor. Writes a Markdown table and JSON; the default gate in
`pdd.runtime.silence` is the row that is best on the generated clips among those within noise of the best on real ones.

    python benchmarks/silence_gate.py --cache WORK/cache-paper --engine engines/small-piano -k 30 --out WORK/gate
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pdd.runtime.backends import create_backend
from pdd.runtime.bundle import load_bundle
from pdd.runtime.errors import PddError
from pdd.runtime.fileio import atomic_write_text, write_json_atomic
from pdd.runtime.griffinlim import initial_phase, mel_to_audio
from pdd.runtime.pack import unpack
from pdd.runtime.sampler import NoiseStream, Sampler, SamplerSettings
from pdd.runtime.silence import SilenceGate
from pdd.training.cache import open_cache
from pdd.training.heldout import held_out_scorer

GRID = [None, (-1.0, 0.02), (-0.95, 0.05), (-0.9, 0.1), (-0.85, 0.1), (-0.8, 0.1), (-0.9, 0.2), (-0.8, 0.2), (-0.7, 0.2),
        (-0.6, 0.2), (-0.5, 0.2), (-0.4, 0.2), (-0.6, 0.4)]


def generated_mels(engine: Path, clips: int) -> np.ndarray:
    bundle = load_bundle(engine)
    with create_backend("ort", bundle, device="cpu") as backend:
        sampler = Sampler(bundle, backend, SamplerSettings(vocoder="gl"), batch=1)
        noise = NoiseStream(0, bundle.packed_shape)
        x0 = np.concatenate([backend.to_host(sampler.sample_x0(noise.take(1))) for _ in range(clips)])
    return unpack(np.asarray(x0, dtype=np.float32), bundle.audio.pack_chunks)


def decode(mels: np.ndarray, audio, gate: SilenceGate | None, iters: int) -> list[np.ndarray]:
    phase = initial_phase((audio.n_freqs, audio.frames), seed=0)
    return [mel_to_audio(m, audio, n_iter=iters, phase0=phase, gate=gate) for m in mels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--engine", type=Path, required=True)
    parser.add_argument("-k", type=int, default=30, help="clips per set")
    parser.add_argument("--iters", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default=None, help="comma-separated GRID indices to run (default: all)")
    args = parser.parse_args()

    cache = open_cache(args.cache)
    audio = cache.config
    held, scorer = held_out_scorer(cache, args.k)
    sets = {"real": held.mels_a, "generated": generated_mels(args.engine, args.k)}
    rows = [{"gate": "real audio", **{f"{k}_{m}": v for k, m, v in
                                       [("real", "fd_bp", scorer.score(list(held.waves_a))["fd_bp"])]}}]
    grid = GRID if args.only is None else [GRID[int(i)] for i in args.only.split(",")]
    for entry in grid:
        gate = None if entry is None else SilenceGate(*entry)
        row: dict = {"gate": "off" if gate is None else f"threshold {gate.threshold}, knee {gate.knee}"}
        for name, mels in sets.items():
            started = time.perf_counter()
            scores = scorer.score(decode(mels, audio, gate, args.iters))
            row[f"{name}_fd_bp"], row[f"{name}_fd_mel"] = scores["fd_bp"], scores["fd_mel"]
            row[f"{name}_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "silence_gate.json", {"k": args.k, "iters": args.iters, "rows": rows}, indent=2)
    lines = ["| gate | real FD-BP | real FD-mel | generated FD-BP | generated FD-mel |", "|---|---|---|---|---|"]
    for r in rows[1:]:
        lines.append(f"| {r['gate']} | {r['real_fd_bp']:.3f} | {r['real_fd_mel']:.1f} | {r['generated_fd_bp']:.3f} | "
                     f"{r['generated_fd_mel']:.1f} |")
    lines.append(f"\nreal held-out audio itself: FD-BP {rows[0]['real_fd_bp']:.3f}; K = {args.k} clips per set, "
                 f"Griffin-Lim {args.iters} it., seeded start phase")
    atomic_write_text(args.out / "silence_gate.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except PddError as exc:
        raise SystemExit(f"error: {exc}") from None
