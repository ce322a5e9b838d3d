"""Both back ends of an engine, measured side by side: quality (FD-BP, FD-mel) and CPU time.

Quality rows, all scored against the same held-out reference half (original audio) of a mel cache:
  real vs real; the ceilings (held-out real mels → Griffin-Lim literal / Griffin-Lim behind the silence gate / the learned
  vocoder); the engine's own clips (seeds 0..K-1, fused sampler) through the same three back ends.
Time (interleaved, batch 1, medians): x̂0 → waveform with each back end, and whole requests (noise → waveform) of the
engine with the learned vocoder vs a `--baseline` bundle with its default back end (e.g. the pdd-engine/1 engine as it
shipped: literal Griffin-Lim 32).

    python benchmarks/backend_quality.py --cache WORK/cache-paper --engine engines/small-piano \
        --baseline WORK/small-piano-v1 -k 30 --out WORK/backend
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np

from pdd.runtime.backends import create_backend
from pdd.runtime.bench_timing import Stats, interleaved
from pdd.runtime.bundle import Bundle, load_bundle
from pdd.runtime.errors import PddError
from pdd.runtime.fileio import atomic_write_text, write_json_atomic
from pdd.runtime.griffinlim import initial_phase, packed_to_audio
from pdd.runtime.pack import pack
from pdd.runtime.sampler import NoiseStream, Sampler, SamplerSettings
from pdd.training.cache import open_cache
from pdd.training.heldout import held_out_scorer


def decoders(bundle: Bundle, backend) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Packed x̂0 (1, C·F, L) → (samples,) for each back end of the bundle."""
    audio = bundle.audio
    phase = initial_phase((1, audio.n_freqs, audio.frames), seed=0)
    neural = Sampler(bundle, backend, SamplerSettings(vocoder="neural"), batch=1)
    return {
        "Griffin-Lim 32, floor decoded literally (today)": lambda x0: packed_to_audio(x0, audio, phase0=phase, gate=None)[0],
        "Griffin-Lim 32, silence gate": lambda x0: packed_to_audio(x0, audio, phase0=phase, gate=bundle.gl_gate)[0],
        "learned vocoder": lambda x0: np.asarray(neural.decode(x0))[0],
    }


def sample_x0s(bundle: Bundle, backend, sampler: Sampler, k: int) -> list[np.ndarray]:
    """K packed x̂0 (1, C·F, L) on the host, from noise seeds as `pdd-run --seed 0` draws them."""
    noise = NoiseStream(0, bundle.packed_shape)
    return [np.asarray(backend.to_host(sampler.sample_x0(noise.take(1)))) for _ in range(k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--engine", type=Path, required=True, help="a bundle with a learned vocoder")
    parser.add_argument("--baseline", type=Path, default=None, help="bundle whose default request is the old baseline")
    parser.add_argument("-k", type=int, default=30)
    parser.add_argument("--runs", type=int, default=15, help="interleaved timing runs per arm")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    cache = open_cache(args.cache)
    audio = cache.config
    held, scorer = held_out_scorer(cache, args.k)
    bundle = load_bundle(args.engine)
    rows: list[dict] = [{"row": "real vs real", **scorer.score_mels([held.mels_a], list(held.waves_a))}]
    with create_backend("ort", bundle, device="cpu") as backend:
        decode = decoders(bundle, backend)
        sampler = Sampler(bundle, backend, SamplerSettings(vocoder="neural"), batch=1)
        generated = sample_x0s(bundle, backend, sampler, args.k)
        noise = NoiseStream(0, bundle.packed_shape)  # the timed requests' noise
        real = [pack(m, audio.pack_chunks)[None] for m in held.mels_a]
        for source, x0s in (("ceiling (held-out real mels)", real), (f"{bundle.name} clips", generated)):
            for name, fn in decode.items():
                scores = scorer.score([fn(x0) for x0 in x0s])
                rows.append({"row": f"{source} → {name}", **scores})
                print(json.dumps(rows[-1]), flush=True)
        x0 = generated[0]
        timing = {name: fn for name, fn in decode.items()}
        timing["request: noise → waveform, learned vocoder"] = lambda: sampler(noise.take(1))
        arms = {name: (lambda f=fn: f(x0)) if not name.startswith("request") else fn for name, fn in timing.items()}
        baseline = None
        if args.baseline is not None:
            old = load_bundle(args.baseline)
            baseline = create_backend("ort", old, device="cpu")
            old_sampler = Sampler(old, baseline, SamplerSettings(), batch=1)
            old_noise = NoiseStream(0, old.packed_shape)
            arms[f"request: noise → waveform, {old.name} {old.format} default back end"] = lambda: old_sampler(old_noise.take(1))
        times = interleaved(arms, args.runs)
        if baseline is not None:
            baseline.close()
    medians = {name: Stats.of(values).to_dict()["p50"] for name, values in times.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "backend_quality.json", {"k": args.k, "rows": rows, "p50_ms": medians}, indent=2)
    lines = ["| audio | FD-BP | FD-mel |", "|---|---|---|"]
    lines += [f"| {r['row']} | {r['fd_bp']:.3f} | {r['fd_mel']:.1f} |" for r in rows]
    lines += ["", "| CPU time, batch 1, interleaved | p50 ms |", "|---|---|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in medians.items()]
    atomic_write_text(args.out / "backend_quality.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except PddError as exc:
        raise SystemExit(f"error: {exc}") from None
