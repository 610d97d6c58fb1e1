#!/usr/bin/env bash
# The recipe-controls experiments recorded in docs/benchmarks.md, one after the other (CPU, ~1 h).
# Seeds 1 and 2 start from seed 0's warm (SFT) checkpoint: the seeds vary the RL run only.
#   bash bench/experiments/recipe_controls.sh [OUT=runs]
set -euo pipefail
OUT=${1:-runs}
WARM=$(ls -d "$OUT"/_warm/*/ | head -1)
LP=(--set length_penalty.weight=1.0 --set length_penalty.warmup_iters=20)
run() { name=$1; shift; [ -f "$OUT/$name/summary.json" ] || longrl train --quiet --set out="$OUT" --set name="$name" "$@"; }
run lp1_s0 "${LP[@]}"
run base_s0
for s in 1 2; do
  run "lp1_s$s" --set seed=$s --set sft.warm_dir="$WARM" "${LP[@]}"
  run "base_s$s" --set seed=$s --set sft.warm_dir="$WARM"
done
run cp_s0 --set sampling.strategy=curriculum+prioritized --set sampling.curriculum_warmup_iters=20 \
  --set sampling.hard_threshold=0.5
