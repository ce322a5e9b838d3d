#!/usr/bin/env bash
# Recipe of the two-stage models (notes first, then sound): the corpus with its MIDI, the mel cache with piano rolls,
# the score notes of the default composers, the symbolic prior and the note-conditioned renderer. Every stage is
# resumable; re-running the script continues what is unfinished.
#
#   WORK=/path/with/space bash engines/recipes/two-stage.sh
#
# Needs: pip install -e ".[cpu,train,export,dev]"; apt-get install --no-install-recommends fluidsynth timgm6mb-soundfont;
# pip install --no-deps basic-pitch==0.4.0 (transcription, structure metrics).
set -euo pipefail
WORK=${WORK:-$PWD/work}
mkdir -p "$WORK"

# 1. Audio with its notes: 5 h of renders of the default composers (each FLAC with the MIDI it was rendered from), then
#    the mel cache with a piano roll per clip (paper preset, held-out split by source file, seed 0).
#    Measured on the 2-core CPU: corpus 50 min (one worker, beside other work), cache 2 min; 145 works, 1633 + 310 clips.
pdd-data corpus --out "$WORK/corpus" --max-hours 5 --workers 1
pdd-data prepare "$WORK/corpus" --out "$WORK/cache-paper" --preset paper

# 2. Notes only: every score of the default composers on a 12-per-quarter grid (454 works, 215 713 notes; 16 skipped
#    for time-outs at 60 s), ~40 min on one core.
pdd-data scores --out "$WORK/scores" --time-limit 60

# 3. The symbolic prior (1.85 M params), never reading the cache's held-out works; one thread.
if [ -f "$WORK/prior-v1/prior.pt" ]; then
    pdd-prior train --out "$WORK/prior-v1" --resume --threads 1
else
    pdd-prior train --data "$WORK/scores" --heldout-from "$WORK/cache-paper" --out "$WORK/prior-v1" --steps 2500 --threads 1
fi
python benchmarks/prior_structure.py --scores "$WORK/scores" --heldout-from "$WORK/cache-paper" \
    --ckpt "$WORK/prior-v1/prior.pt" -k 64 --untrained --out "$WORK/prior-structure" --overwrite

# 4. The note-conditioned renderer: the shipped teacher's network (small, 192-wide top) with notes + context channels,
#    note dropout 0.15, context on half the items; lr 4e-4, batch 16, one thread.
if [ -f "$WORK/renderer-v1/run.json" ]; then
    pdd-train --out "$WORK/renderer-v1" --resume --threads 1 --no-progress
else
    pdd-train --data "$WORK/cache-paper" --preset small --top-width 192 --condition notes+context --out "$WORK/renderer-v1" \
        --steps 20000 --lr 4e-4 --preview-every 5000 --threads 1 --no-progress
fi

# 5. Does the renderer play the notes it is given? Held-out rolls in, note F1 and structure out, at several guidance
#    scales, decoded by the shipped engine's learned vocoder (docs/two-stage.md).
python benchmarks/renderer_notes.py --ckpt "$WORK/renderer-v1/checkpoint.pt" --cache "$WORK/cache-paper" \
    --engine engines/small-piano -k 16 --steps 32 --guidance 0,1,2,3 --out "$WORK/renderer-notes" --overwrite
