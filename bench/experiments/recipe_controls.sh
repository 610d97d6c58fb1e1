#!/usr/bin/env bash
# The recipe-controls experiments recorded in docs/benchmarks.md, run one after the other on CPU.
# Seeds 1 and 2 start from seed 0's warm (SFT) checkpoint: the seeds vary the RL run only.
#   bash bench/experiments/recipe_controls.sh [OUT]
set -euo pipefail
OUT=${1:-runs}
WARM=$(ls -d "$OUT"/_warm/*/ | grep -v tmp | head -1)
NOLP=(--set length_penalty.weight=0)  # the quickstart preset has the penalty on; the baseline turns it off
# The 60-iteration runs pin the preset they were recorded with (penalty after 10 of 60 iterations).
I60=(--set rl.iterations=60 --set length_penalty.warmup_iters=10)
run() { name=$1; shift; [ -f "$OUT/$name/summary.json" ] || longrl train --quiet --set out="$OUT" --set name="$name" "$@"; }
run lp_s0 "${I60[@]}"
run nolp_s0 "${I60[@]}" "${NOLP[@]}"
python bench/experiments/kill_resume.py --reference "$OUT/lp_s0" --name kill_s0 --seed 1
run cp_s0 "${I60[@]}" --set sampling.strategy=curriculum+prioritized --set sampling.curriculum_warmup_iters=20 \
  --set sampling.hard_threshold=0.5
run partial_s0 "${I60[@]}" --set partial.enabled=true --set partial.budget=48
for s in 1 2; do
  run "lp_s$s" "${I60[@]}" --set seed=$s --set sft.warm_dir="$WARM"
  run "nolp_s$s" "${I60[@]}" --set seed=$s --set sft.warm_dir="$WARM" "${NOLP[@]}"
done
# The current preset (90 iterations, penalty after 30) against the same 90 iterations without it.
for s in 0 1 2; do
  run "i90w30_s$s" --set seed=$s --set sft.warm_dir="$WARM"
  run "i90nolp_s$s" --set seed=$s --set sft.warm_dir="$WARM" "${NOLP[@]}"
  run "i90w30x2_s$s" --set seed=$s --set sft.warm_dir="$WARM" --set length_penalty.weight=2
  run "i90w30x3_s$s" --set seed=$s --set sft.warm_dir="$WARM" --set length_penalty.weight=3
  run "i90rest_s$s" --set seed=$s --set sft.warm_dir="$WARM" --set rl.algorithm=rest
done
# Weight 2 with 90 penalised iterations (120 in all), against the same 120 iterations without it; seed 0.
run i120x2_s0 --set sft.warm_dir="$WARM" --set rl.iterations=120 --set length_penalty.weight=2
run i120nolp_s0 --set sft.warm_dir="$WARM" --set rl.iterations=120 "${NOLP[@]}"
