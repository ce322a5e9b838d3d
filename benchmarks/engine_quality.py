"""Engines side by side on the same held-out reference: FD-BP, KAD, FD-mel and the busy/flat statistics (spectral flux,
silent-value fraction, per-band std, each also as a ratio to held-out real audio), through each engine's learned vocoder
and through Griffin-Lim 32 behind the silence gate; the structure metrics of Basic Pitch's transcriptions (× real) go to
engine_structure.md beside the table.

Every engine samples the same seeded noise (seeds 0..K-1, its fused sampler), so rows differ only by the model. This is
the re-ship check of docs/ablations.md: a new default engine must beat the shipped one here, with the same back end.

    python benchmarks/engine_quality.py --cache WORK/cache-paper --engine engines/small-piano \
        --engine WORK/small-piano-v2 -k 48 --out WORK/engine-quality
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from backend_quality import decoders, sample_x0s  # this folder: the back ends as that benchmark decodes them
from pdd.runtime.backends import create_backend
from pdd.runtime.bundle import load_bundle
from pdd.runtime.errors import PddError
from pdd.runtime.fileio import atomic_write_text, write_json_atomic
from pdd.runtime.sampler import Sampler, SamplerSettings
from pdd.training.cache import open_cache
from pdd.training.heldout import held_out_scorer
from pdd.training.structure import LABELS, METRICS

# row label → backend_quality.decoders' name for the same back end
BACK_ENDS = {"learned vocoder": "learned vocoder", "Griffin-Lim 32 + gate": "Griffin-Lim 32, silence gate"}
RATIO_METRICS = ("flux_mean", "silent_fraction", "band_std")


def engine_waves(engine: Path, k: int) -> tuple[str, dict[str, list[np.ndarray]]]:
    """K clips of one engine (noise seeds as `pdd-run --seed 0`), each x̂0 decoded by both back ends."""
    bundle = load_bundle(engine)
    if "neural" not in bundle.vocoders:
        raise PddError(f"{engine}: this comparison needs a bundle with a learned vocoder")
    with create_backend("ort", bundle, device="cpu") as backend:
        x0s = sample_x0s(bundle, backend, Sampler(bundle, backend, SamplerSettings(vocoder="neural"), batch=1), k)
        decode = decoders(bundle, backend)
        return bundle.name, {label: [decode[name](x0) for x0 in x0s] for label, name in BACK_ENDS.items()}


def with_ratios(scores: dict[str, Any], real: dict[str, Any]) -> dict[str, Any]:
    """Adds `<metric>_x_real` for the busy/flat statistics: 1.0 is real playing."""
    out = dict(scores)
    for metric in RATIO_METRICS:
        value, reference = scores.get(metric), real.get(metric)
        out[f"{metric}_x_real"] = None if value is None or not reference else value / reference
    return out


def fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def markdown(rows: list[dict[str, Any]], k: int) -> str:
    lines = [f"K = {k} clips per row (noise seeds 0..{k - 1}); × real: the statistic over held-out real audio's.", "",
             "| audio | FD-BP ↓ | KAD ↓ | FD-mel ↓ | flux dB (× real) | silent fraction (× real) | band std (× real) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = [f"{fmt(r[m])} ({fmt(r[m + '_x_real'], 2)}×)" if r[m + "_x_real"] is not None else fmt(r[m])
                 for m in RATIO_METRICS]
        lines.append(f"| {r['row']} | {fmt(r['fd_bp'])} | {fmt(r['kad'])} | {fmt(r['fd_mel'], 4)} | "
                     + " | ".join(ratio) + " |")
    return "\n".join(lines) + "\n"


def structure_markdown(rows: list[dict[str, Any]], k: int) -> str:
    """The structure metrics of every row as 'value (× real)'; the real row is the held-out halves' floor."""
    lines = [f"K = {k} clips per row; notes transcribed by Basic Pitch; × real: over the held-out reference half's; the "
             "real row compares the two held-out halves (the floor).", "",
             "| audio | " + " | ".join(LABELS[m] for m in METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for r in rows:
        values, ratios = r["structure"] or {}, r["structure_x_real"] or {}
        cells = [fmt(values.get(m)) if ratios.get(m) is None else f"{fmt(values.get(m))} ({fmt(ratios[m], 2)}×)"
                 for m in METRICS]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="mel cache whose held-out clips are the reference")
    parser.add_argument("--engine", type=Path, action="append", required=True, help="a bundle; repeat to compare")
    parser.add_argument("-k", type=int, default=48)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not 2 <= args.k <= 1024:
        raise PddError(f"-k must be between 2 and 1024, got {args.k}")

    held, scorer = held_out_scorer(open_cache(args.cache), args.k)
    real = scorer.score_mels([held.mels_a], list(held.waves_a))
    rows = [{"row": "real vs real (held-out halves)", **with_ratios(real, real)}]
    for engine in args.engine:
        name, waves = engine_waves(engine, args.k)
        for back_end in BACK_ENDS:
            rows.append({"row": f"{name} ({engine}) → {back_end}", **with_ratios(scorer.score(waves[back_end]), real)})
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "engine_quality.json", {"k": args.k, "rows": rows}, indent=2)
    table = markdown(rows, args.k)
    atomic_write_text(args.out / "engine_quality.md", table)
    structure = structure_markdown(rows, args.k)
    atomic_write_text(args.out / "engine_structure.md", structure)
    print(table + "\n" + structure)


if __name__ == "__main__":
    try:
        main()
    except PddError as exc:
        raise SystemExit(f"error: {exc}") from None
