"""The symbolic prior's notes against real notes, before any audio: structure metrics of K sampled clips × held-out real.

Real reference: 8.9-s windows of the works a mel cache holds out (the works the prior never read), each played at its own
score tempo. Each sampled clip i is played at the tempo of reference window i, so tempo is matched pair by pair and only
the notes differ. Rows: the prior; the real reference's two halves against each other (the floor: how far two samples of
real music differ); optionally an untrained prior of the same size (the ceiling of "not learned").

  python benchmarks/prior_structure.py --scores data/scores --heldout-from data/cache-paper \
      --ckpt runs/prior/prior.pt -k 64 --out runs/prior-structure

Writes prior_structure.json and prior_structure.md into --out (refused if they exist, unless --overwrite).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SECONDS = 384 * 512 / 22050  # one clip of the paper preset


def real_windows(scores, works: set[str], k: int, seed: int) -> list[tuple[np.ndarray, float]]:
    """K (notes (n, 4) seconds, bpm) windows of SECONDS from `works`, drawn without replacement, seeded."""
    from pdd.runtime.events import ticks_to_notes
    from pdd.training.structure import split_notes

    windows = []
    for i, work in enumerate(scores.works):
        if work not in works:
            continue
        bpm = float(scores.bpm[i])
        notes = ticks_to_notes(scores.work_notes(i).astype(np.int64), bpm, velocity=127)  # velocity 1.0, as a score's
        for part, _ in split_notes(notes, float(notes["offset"].max()), SECONDS):
            if part.shape[0]:
                windows.append((part, bpm))
    picks = np.random.default_rng(seed).permutation(len(windows))[:k]
    return [windows[i] for i in sorted(picks)]


def measure(sets: list[np.ndarray]) -> dict[str, float | None]:
    from pdd.training.structure import clip_structure, set_structure

    return set_structure(clip_structure(notes, SECONDS) for notes in sets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scores", required=True, type=Path)
    parser.add_argument("--heldout-from", required=True, type=Path)
    parser.add_argument("--ckpt", required=True, type=Path)
    parser.add_argument("-k", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--untrained", action="store_true", help="Add a row for an untrained prior of the same size.")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except Exception as exc:  # noqa: BLE001 — a benchmark prints one error line, never a traceback
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    import torch

    from pdd.runtime.prior_sampler import PriorSettings, events_to_notes
    from pdd.training.cache import open_cache
    from pdd.training.prior import EventPrior
    from pdd.training.prior_torch import sample_with_torch
    from pdd.training.prior_train import load_prior
    from pdd.training.score_notes import heldout_work_ids, load_scores
    from pdd.training.structure import METRICS, structure_ratios

    if not 2 <= args.k <= 4096:
        raise ValueError("-k must be 2..4096")
    targets = [args.out / "prior_structure.json", args.out / "prior_structure.md"]
    if any(t.exists() for t in targets) and not args.overwrite:
        raise FileExistsError(f"{targets[0]} exists; pass --overwrite")
    torch.set_num_threads(1)
    scores = load_scores(args.scores)
    held = heldout_work_ids(open_cache(args.heldout_from))
    reference = real_windows(scores, held, args.k, args.seed)
    model, state = load_prior(args.ckpt)
    rows: dict[str, dict[str, float | None]] = {}
    real = measure([notes for notes, _ in reference])
    half = len(reference) // 2
    rows["real, first half × second half (floor)"] = structure_ratios(measure([n for n, _ in reference[:half]]),
                                                                      measure([n for n, _ in reference[half:]]))  # fmt: skip

    def prior_row(prior: EventPrior) -> dict[str, float | None]:
        clips = []
        rng = np.random.default_rng(args.seed)
        for _, bpm in reference:  # one clip per reference window, at its tempo
            settings = PriorSettings(temperature=args.temperature, top_p=args.top_p, bpm=bpm)
            (tokens,) = sample_with_torch(prior, 1, settings.ticks_for(SECONDS), settings, rng)
            clips.append(events_to_notes(tokens, bpm, SECONDS))
        return measure(clips)

    prior_values = prior_row(model)
    rows[f"prior (step {state.get('step')})"] = structure_ratios(prior_values, real)
    if args.untrained:
        torch.manual_seed(args.seed)
        rows["untrained prior"] = structure_ratios(prior_row(EventPrior(model.config).eval()), real)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"k": len(reference), "seconds": SECONDS, "heldout_works": len(held), "real": real, "prior": prior_values,
              "ratios": rows, "checkpoint": str(args.ckpt), "step": state.get("step"),
              "temperature": args.temperature, "top_p": args.top_p}  # fmt: skip
    targets[0].write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"K = {len(reference)} clips of {SECONDS:.2f} s; reference: windows of the {len(held)} held-out works; "
             "each value × real (1.00 = like real)", "",
             "| row | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|",
             "| real (absolute) | " + " | ".join(f"{real[m]:.3g}" if real[m] is not None else "—" for m in METRICS) + " |"]
    for name, ratios in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{ratios[m]:.2f}" if ratios[m] is not None else "—" for m in METRICS) + " |")
    targets[1].write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
