"""Does the note-conditioned renderer play the notes it is given? The "renderer ceiling": held-out clips' real rolls in,
audio out, transcribed by Basic Pitch and scored against those rolls (note precision/recall/F1, onset within 50 ms), at
several classifier-free guidance scales; the same transcription of the held-out real audio is the transcriber's own
ceiling, and guidance 0 (the unconditional model) the floor.

  python benchmarks/renderer_notes.py --ckpt runs/renderer/checkpoint.pt --cache data/cache-paper \
      --engine engines/small-piano -k 16 --steps 32 --guidance 0,1,2,3 --out runs/renderer-notes

The renderer's x̂0 is decoded by the learned vocoder of --engine (same audio preset). Writes renderer_notes.json/.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--engine", required=True, type=Path)
    parser.add_argument("-k", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--guidance", default="0,1,2,3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except Exception as exc:  # noqa: BLE001 — a benchmark prints one error line, never a traceback
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    import torch

    from pdd.runtime.backends import create_backend
    from pdd.runtime.bundle import load_bundle
    from pdd.runtime.conditioning import ConditionConfig, build_condition
    from pdd.runtime.pack import pack
    from pdd.runtime.roll import roll_to_notes
    from pdd.runtime.schedule import ddim_sample, grid
    from pdd.training.basic_pitch import BasicPitchEmbedder
    from pdd.training.cache import open_cache
    from pdd.training.checkpoint import denoiser_from_state, load_checkpoint
    from pdd.training.structure import METRICS, clip_structure, note_f1_many, set_structure, structure_ratios

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from backend_quality import decoders

    guidances = [float(g) for g in args.guidance.split(",")]
    if not 1 <= args.k <= 256 or not 1 <= args.steps <= 1024 or not all(0 <= g <= 20 for g in guidances):
        raise ValueError("-k 1..256, --steps 1..1024, guidance 0..20")
    targets = [args.out / "renderer_notes.json", args.out / "renderer_notes.md"]
    if any(t.exists() for t in targets) and not args.overwrite:
        raise FileExistsError(f"{targets[0]} exists; pass --overwrite")
    torch.set_num_threads(1)
    state = load_checkpoint(args.ckpt)
    model, info = denoiser_from_state(state, args.ckpt)
    condition = ConditionConfig.from_dict(state["extra"]["condition"])
    cache = open_cache(args.cache)
    audio = cache.config
    picks = np.sort(np.random.default_rng(args.seed).choice(cache.num_clips("heldout"), args.k, replace=False))
    rolls = [np.asarray(cache.rolls("heldout")[i], dtype=np.float32) for i in picks]
    mels = [np.asarray(cache.clips("heldout")[i], dtype=np.float32) for i in picks]
    wanted = [roll_to_notes(r, cache.roll_config) for r in rolls]
    cond = torch.from_numpy(np.stack([build_condition(condition, audio, r) for r in rolls]))
    null = torch.zeros_like(cond)
    noise = torch.from_numpy(np.random.default_rng(args.seed + 1).standard_normal((args.k, *audio.packed_shape)).astype(np.float32))
    transcriber = BasicPitchEmbedder()
    bundle = load_bundle(args.engine)
    seconds = audio.frames * audio.hop_length / audio.sample_rate
    rows: dict[str, dict] = {}
    with create_backend("ort", bundle, device="cpu") as backend:
        decode = decoders(bundle, backend)["learned vocoder"]

        def score(x0s: list[np.ndarray]) -> tuple[dict, dict]:
            heard = [transcriber.transcribe(decode(x0[None]), audio.sample_rate) for x0 in x0s]
            f1 = note_f1_many(wanted, heard)
            return {"precision": f1.precision, "recall": f1.recall, "f1": f1.f1}, set_structure(
                clip_structure(h, seconds) for h in heard)

        real_f1, real_structure = score([pack(m, audio.pack_chunks, audio.pack_order) for m in mels])
        rows["held-out real audio (the transcriber's ceiling)"] = {**real_f1, "x_real": structure_ratios(real_structure, real_structure)}
        for g in guidances:
            def guided(z: torch.Tensor, t: float, g: float = g) -> torch.Tensor:
                times = torch.full((z.shape[0],), float(t))
                v_null = model(z, times, null)
                return v_null if g == 0 else v_null + g * (model(z, times, cond) - v_null)

            with torch.no_grad():
                x0 = ddim_sample(guided, noise.clone(), grid(args.steps)).numpy()
            f1, structure = score(list(x0))
            rows[f"renderer, guidance {g:g}" + (" (unconditional)" if g == 0 else "")] = {
                **f1, "x_real": structure_ratios(structure, real_structure)}
            print(json.dumps({"row": g, **f1}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"k": args.k, "steps": args.steps, "checkpoint": str(args.ckpt), "step": info.train_step, "rows": rows,
              "real_structure": real_structure}  # fmt: skip
    targets[0].write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"K = {args.k} held-out clips, DDIM {args.steps} steps, renderer at step {info.train_step}; note scores against "
             "each clip's roll (onset ±50 ms); structure × the real clips' transcriptions", "",
             "| row | precision | recall | F1 | " + " | ".join(METRICS) + " |", "|---" * (4 + len(METRICS)) + "|"]
    for name, row in rows.items():
        ratios = " | ".join(f"{row['x_real'][m]:.2f}" if row["x_real"][m] is not None else "—" for m in METRICS)
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {ratios} |")
    targets[1].write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
