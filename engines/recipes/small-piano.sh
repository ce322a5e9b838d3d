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
THREADS=${THREADS:-1}  # torch threads of the distillation (every shipped stage ran on one thread of the 2-core CPU)
ENGINE=${ENGINE:-engines/small-piano}
mkdir -p "$WORK"

# 1. Data: ~5.2 h of piano renders of music21's corpus (71 works, seed-free: the selection is deterministic), then the mel cache
#    (paper preset, held-out split by source file, seed 0). The learned vocoder trains on it, and its held-out clips are the
#    evaluation reference.
pdd-data corpus --out "$WORK/corpus" --max-hours 5 --workers 2
pdd-data prepare "$WORK/corpus" --out "$WORK/cache-paper" --preset paper
#    The teacher trains on 10 h of the same composers (293 works; the first 71 are the 5-h corpus, so copying
#    $WORK/corpus into corpus10 first saves their render), holding out exactly cache-paper's held-out pieces.
pdd-data corpus --out "$WORK/corpus10" --max-hours 10 --workers 2
pdd-data prepare "$WORK/corpus10" --out "$WORK/cache10" --preset paper --heldout-from "$WORK/cache-paper"

# 2. Teacher (docs/ablations.md): small U-Net with a 192-wide top level (6.37 M params), v-diffusion, batch 16,
#    AdamW lr 4e-4 (warm-up 500, cosine to 5 %), EMA 0.999, seed 0, one thread. The shipped model ran 40000 steps planned,
#    cut to 20000 at step 7550 (the cosine schedule is re-planned on resume).
if [ ! -f "$WORK/teacher-v2/run.json" ]; then
    pdd-train --data "$WORK/cache10" --preset small --top-width 192 --out "$WORK/teacher-v2" --steps 20000 --lr 4e-4 \
        --preview-every 5000 --threads 1
else
    pdd-train --out "$WORK/teacher-v2" --resume --steps 20000 --threads 1
fi

# 3. Progressive distillation 1024 → 4 in two stages (early rounds are nearly free: the student starts as its teacher):
#    1024 → 64 at 100 steps per round, then 64 → 4 at 1000 steps per round; truncated-SNR weighting, Adam lr 1e-4 annealed to 0
#    in each round, batch 16, seed 0.
distil() {  # distil OUT TEACHER FROM TO STEPS_PER_ROUND: start, or resume an interrupted run
    if [ -f "$1/distill.json" ]; then
        pdd-distill --out "$1" --resume --threads "$THREADS"
    else
        pdd-distill --teacher "$2" --data "$WORK/cache10" --from-steps "$3" --to-steps "$4" --steps-per-round "$5" \
            --out "$1" --threads "$THREADS"
    fi
}
distil "$WORK/distill-a" "$WORK/teacher-v2/checkpoint.pt" 1024 64 100
distil "$WORK/distill-b" "$WORK/distill-a/student-64.pt" 64 4 1000

# 3b. The learned vocoder: 3.1 M params, 20000 AdamW steps, batch 16 × 32 frames of the cache's training-split
#     audio (the held-out files stay unseen), EMA 0.999, one thread: 78 min on the 2-core CPU (4.3 it/s).
if [ -f "$WORK/vocoder-small/run.json" ]; then
    pdd-vocoder train --out "$WORK/vocoder-small" --resume --audio-dir "$WORK/corpus" --threads 1
else
    pdd-vocoder train --data "$WORK/cache-paper" --audio-dir "$WORK/corpus" --out "$WORK/vocoder-small" --steps 20000 \
        --threads 1
fi

# 4. Quality vs steps: teacher DDIM@N vs student@N, 48 clips per row from seed 0, against held-out clips; every row also
#    decoded with the learned vocoder, and its ceiling beside Griffin-Lim's. (One thread: 12 min, most of it teacher@1024.)
#    docs/ablations.md's DDPM@1000 row: the same with --steps 1024,8 --ddpm-steps 1000 --no-wavs --out "$WORK/eval-ddpm".
pdd-eval --teacher "$WORK/teacher-v2/checkpoint.pt" --students "$WORK/distill-a" --students "$WORK/distill-b" --data "$WORK/cache-paper" \
    --out "$WORK/eval" -k 48 --steps 1024,64,16,8,4 --threads 1 --force --vocoder-ckpt "$WORK/vocoder-small/vocoder.pt"

# 5. Export the 8-step student with the learned vocoder (gate −0.8/0.2, as the first learned-vocoder release) and the evaluation
#    figures in its provenance; then the fp16 export beside it. (--force replaces only the bundle's own files, not the card.)
pdd-export --ckpt "$WORK/distill-b/student-8.pt" --steps 8 --out "$ENGINE" --name small-piano --eval-json "$WORK/eval/table.json" \
    --vocoder-ckpt "$WORK/vocoder-small/vocoder.pt" --vocoder-gate=-0.8,0.2 --force
pdd-export --ckpt "$WORK/distill-b/student-8.pt" --steps 8 --out "$ENGINE-fp16" --name small-piano-fp16 --precision fp16 \
    --eval-json "$WORK/eval/table.json" --vocoder-ckpt "$WORK/vocoder-small/vocoder.pt" --vocoder-gate=-0.8,0.2 --force

# 6. Listening samples and their spectrograms for the model card.
python engines/recipes/card_assets.py --engine "$ENGINE" --seeds 0,1,2,3 --seconds 6 --vocoders neural,gl

# 7. Both back ends side by side (quality and CPU time): the card's "Back ends" table; against the previous engine (kept
#    as $WORK/small-piano-previous before step 5, if you have one): the card's "Against the previous engine" table.
python benchmarks/backend_quality.py --cache "$WORK/cache-paper" --engine "$ENGINE" -k 30 --out "$WORK/backend"
if [ -d "$WORK/small-piano-previous" ]; then
    python benchmarks/engine_quality.py --cache "$WORK/cache-paper" --engine "$WORK/small-piano-previous" --engine "$ENGINE" \
        -k 48 --out "$WORK/engine-quality"
fi

# 8. Speed: the card's "Speed" table and its two reports.
pdd-bench --engine "$ENGINE" --batch 1,4 --runs 50 --markdown "$ENGINE/bench_cpu.md" --overwrite
python benchmarks/compare.py run --ckpt "$WORK/distill-b/student-8.pt" --engine "$ENGINE" --runs 20 --teacher-steps 64 \
    --markdown "$ENGINE/compare_torch_cpu.md" --overwrite
