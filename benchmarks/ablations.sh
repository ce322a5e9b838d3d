#!/usr/bin/env bash
# The ablations (docs/ablations.md): every teacher variant trained for the same CPU time on the same cache, each
# evaluated by pdd-eval against the same held-out clips, then one table. Resumable: re-running skips finished stages.
#
#   WORK=/path/with/space MINUTES=120 bash benchmarks/ablations.sh
#
# Budget: MINUTES of CPU time per teacher on THREADS threads, reached by a fixed step count per variant measured on this
# machine (benchmarks/ablations.py steps; run it when nothing else loads the CPU). Cost: 8 teachers × MINUTES, plus
# evaluation (~K × 1024 DDIM steps per teacher, ~K × 1000 DDPM steps once) and one distillation of the base teacher.
# Needs the paper-preset cache of engines/recipes/small-piano.sh step 1 ($WORK/cache-paper), and basic-pitch for FD-BP.
set -euo pipefail
WORK=${WORK:-$PWD/work}
THREADS=${THREADS:-2}
MINUTES=${MINUTES:-120}
K=${K:-64}               # clips per row; ordering checked stable by a second evaluation seed (SEEDS)
SEEDS=${SEEDS:-"0 1"}
EVAL_STEPS=${EVAL_STEPS:-1024,64,8}   # the base teacher's rows; every other variant is compared at DDIM@64 only
DISTILL_A=${DISTILL_A:-100}   # student steps per halving, 1024 → 64 and 64 → 8 (the shipped recipe: 100 and 1000)
DISTILL_B=${DISTILL_B:-1000}
OUT=${OUT:-docs/ablations.md}
A="$WORK/ablations"
mkdir -p "$A"
CACHE="$WORK/cache-paper"
[ -d "$CACHE" ] || { echo "error: $CACHE missing: run step 1 of engines/recipes/small-piano.sh first" >&2; exit 2; }

# 1. Cost per variant and an equal-CPU-time step count for each.
[ -f "$A/cost.json" ] || python benchmarks/ablations.py cost --out "$A/cost.json"
[ -f "$A/budget.json" ] || python benchmarks/ablations.py steps --minutes "$MINUTES" --threads "$THREADS" --out "$A/budget.json"
steps_of() { python -c "import json,sys; print(json.load(open('$A/budget.json'))[sys.argv[1]]['steps'])" "$1"; }
flags_of() { python -c "import sys; sys.path.insert(0, 'benchmarks'); from ablations import VARIANTS; print(' '.join(VARIANTS[sys.argv[1]]))" "$1"; }
VARIANT_NAMES=$(python -c "import sys; sys.path.insert(0, 'benchmarks'); from ablations import VARIANTS; print(' '.join(VARIANTS))")

# 2. One teacher per variant: the shipped recipe (small, lr 4e-4, batch 16, seed 0) with one flag changed.
for v in $VARIANT_NAMES; do
    run="$A/teacher-$v"
    if python benchmarks/ablations.py finished "$run"; then
        continue
    elif [ -f "$run/checkpoint.pt" ]; then
        pdd-train --out "$run" --resume --threads "$THREADS" --no-progress
    else
        # shellcheck disable=SC2046
        pdd-train --data "$CACHE" --preset small --lr 4e-4 --steps "$(steps_of "$v")" --out "$run" --threads "$THREADS" \
            --preview-every 0 --no-progress $(flags_of "$v")
    fi
done

# 3. The base teacher distilled to 8 steps (the PDD row), as the shipped recipe does.
distil() {
    if [ -f "$1/distill.json" ]; then pdd-distill --out "$1" --resume --threads "$THREADS"
    else pdd-distill --teacher "$2" --data "$CACHE" --from-steps "$3" --to-steps "$4" --steps-per-round "$5" --out "$1" --threads "$THREADS"; fi
}
distil "$A/distill-a" "$A/teacher-base/checkpoint.pt" 1024 64 "$DISTILL_A"
distil "$A/distill-b" "$A/distill-a/student-64.pt" 64 8 "$DISTILL_B"

# 4. Evaluation: every teacher with DDIM at EVAL_STEPS; the base one also with DDPM@1000 and its student@8; two seeds.
for seed in $SEEDS; do
    for v in $VARIANT_NAMES; do
        extra=(--steps 64 --reference-steps 64)   # one DDIM@64 sampling per variant (it is also the fidelity reference)
        [ "$v" = base ] && extra=(--steps "$EVAL_STEPS" --students "$A/distill-b" --ddpm-steps 1000)
        [ -f "$A/eval-$v-s$seed/table.json" ] || pdd-eval --teacher "$A/teacher-$v/checkpoint.pt" --data "$CACHE" \
            -k "$K" --seed "$seed" --no-wavs --threads "$THREADS" --out "$A/eval-$v-s$seed" --force "${extra[@]}"
    done
done

# 5. The table (seed 0), the same ranking checked under seed 1, and its plot.
rows=()
for v in $VARIANT_NAMES; do rows+=(--row "$v (DDIM@64)=$A/eval-$v-s0#teacher DDIM@64"); done
rows+=(--row "base (DDIM@8)=$A/eval-base-s0#teacher DDIM@8" --row "base (DDIM@1024)=$A/eval-base-s0#teacher DDIM@1024"
       --row "base (DDPM@1000)=$A/eval-base-s0#teacher DDPM@1000" --row "base (student@8)=$A/eval-base-s0#student@8")
python benchmarks/ablations.py table --budget "$A/budget.json" --cost "$A/cost.json" --out "$OUT" \
    --check-seed=-s0:-s1 "${rows[@]}"
