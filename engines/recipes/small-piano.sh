#!/usr/bin/env bash
# Recipe of the shipped default engine `engines/small-piano`: data → teacher → distil → eval → export, with the exact
# arguments and seeds used. Every stage is resumable; re-running the script skips what is already done.
#
#   WORK=/path/with/space bash engines/recipes/small-piano.sh
#
# Needs: pip install -e ".[cpu,train,export,dev]"; apt-get install --no-install-recommends fluidsynth timgm6mb-soundfont;
# pip install --no-deps basic-pitch==0.4.0 (FD-BP). Cost measured on the 2-core CPU machine is in engines/small-piano/MODEL_CARD.md.
set -euo pipefail
WORK=${WORK:-$PWD/work}
THREADS=${THREADS:-2}
ENGINE=${ENGINE:-engines/small-piano}
mkdir -p "$WORK"

# 1. Data: ~5.2 h of piano renders of music21's corpus (71 works, seed-free: the selection is deterministic), then the mel cache
#    (paper preset, held-out split by source file, seed 0).
pdd-data corpus --out "$WORK/corpus" --max-hours 5 --workers 2
pdd-data prepare "$WORK/corpus" --out "$WORK/cache-paper" --preset paper

# 2. Teacher: small U-Net (4.79 M params), v-diffusion, batch 16, AdamW lr 4e-4 (warm-up 500, cosine), EMA 0.999, seed 0.
#    The shipped model ran 20000 steps planned, cut to 12000 at step 4000 (the cosine schedule is re-planned on resume).
if [ ! -f "$WORK/teacher-small/run.json" ]; then
    pdd-train --data "$WORK/cache-paper" --preset small --out "$WORK/teacher-small" --steps 12000 --lr 4e-4 --threads "$THREADS"
else
    pdd-train --out "$WORK/teacher-small" --resume --steps 12000 --threads "$THREADS"
fi

# 3. Progressive distillation 1024 → 4 in two stages (early rounds are nearly free: the student starts as its teacher):
#    1024 → 64 at 100 steps per round, then 64 → 4 at 1000 steps per round; truncated-SNR weighting, Adam lr 1e-4 annealed to 0
#    in each round, batch 16, seed 0.
distil() {  # distil OUT TEACHER FROM TO STEPS_PER_ROUND: start, or resume an interrupted run
    if [ -f "$1/distill.json" ]; then
        pdd-distill --out "$1" --resume --threads "$THREADS"
    else
        pdd-distill --teacher "$2" --data "$WORK/cache-paper" --from-steps "$3" --to-steps "$4" --steps-per-round "$5" \
            --out "$1" --threads "$THREADS"
    fi
}
distil "$WORK/distill-a" "$WORK/teacher-small/checkpoint.pt" 1024 64 100
distil "$WORK/distill-b" "$WORK/distill-a/student-64.pt" 64 4 1000

# 3b. The learned vocoder (wave 2): 3.1 M params, 20000 AdamW steps, batch 16 × 32 frames of the cache's training-split
#     audio (the held-out files stay unseen), EMA 0.999, one thread: 78 min on the 2-core CPU (4.3 it/s).
if [ -f "$WORK/vocoder-small/run.json" ]; then
    pdd-vocoder train --out "$WORK/vocoder-small" --resume --threads 1
else
    pdd-vocoder train --data "$WORK/cache-paper" --out "$WORK/vocoder-small" --steps 20000 --threads 1
fi

# 4. Quality vs steps: teacher DDIM@N vs student@N, 16 clips per row from seed 0, against held-out clips; every row also
#    decoded with the learned vocoder, and its ceiling beside Griffin-Lim's.
pdd-eval --teacher "$WORK/teacher-small/checkpoint.pt" --students "$WORK/distill-a" --students "$WORK/distill-b" --data "$WORK/cache-paper" \
    --out "$WORK/eval" -k 16 --threads "$THREADS" --force --vocoder-ckpt "$WORK/vocoder-small/vocoder.pt"

# 5. Export the 8-step student (fp32) with the learned vocoder and the evaluation figures in its provenance.
pdd-export --ckpt "$WORK/distill-b/student-8.pt" --steps 8 --out "$ENGINE" --name small-piano --eval-json "$WORK/eval/table.json" \
    --vocoder-ckpt "$WORK/vocoder-small/vocoder.pt" --force
#    (The shipped engine was upgraded in place instead, its student's checkpoint being gone:
#     pdd-export --from-bundle engines/small-piano --vocoder-ckpt "$WORK/vocoder-small/vocoder.pt" --out "$WORK/small-piano-new",
#     then the bundle files copied over, keeping the card.)

# 6. Listening samples and their spectrograms for the model card.
python engines/recipes/card_assets.py --engine "$ENGINE" --seeds 0,1,2,3 --seconds 6 --vocoders neural,gl

# 7. Both back ends side by side (quality and CPU time): the card's "Back ends" table.
python benchmarks/backend_quality.py --cache "$WORK/cache-paper" --engine "$ENGINE" -k 30 --out "$WORK/backend"
