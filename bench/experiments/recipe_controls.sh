#!/usr/bin/env bash
# The recipe-controls experiments recorded in docs/benchmarks.md, run one after the other on CPU.
# Seeds 1 and 2 start from seed 0's warm (SFT) checkpoint: the seeds vary the RL run only.
#   bash bench/experiments/recipe_controls.sh [OUT]
set -euo pipefail
OUT=${1:-runs}
NOLP=(--set length_penalty.weight=0)  # the runs without the length penalty
# The preset has changed five times since 2026-11-24; the runs recorded under an earlier one pin it:
#   60 iterations, penalty (weight 1) after 10, warm-up traces giving up in 0.5 of them (I60);
#   90 iterations, penalty after 30, give-up 0.5 (OLD + I90) or 0.8 (NEW + I90);
#   120 iterations, no penalty, give-up 0.8 (NEW + NOLP);
#   120 iterations, penalty after 90, give-up 0.8 (NEW), constant lr 5e-5;
#   the same with a cosine lr from 8e-5 to 1e-5 (NEW + PRESET_LR);
#   now: that with responses cut at the cap out of the loss (NEW + PRESET_LR + MT).
OLD=(--set sft.give_up_prob=0.5 --set sft.warm_dir="$OUT/_warm/give_up_0.5")  # built by lp_s0
I90=(--set rl.iterations=90 --set length_penalty.weight=1 --set length_penalty.warmup_iters=30)
I60=("${OLD[@]}" --set rl.iterations=60 --set length_penalty.weight=1 --set length_penalty.warmup_iters=10)
NEW=(--set sft.warm_dir="$OUT/_warm/preset")  # the current warm-up (give-up 0.8), built by gu80_s0
# Every run recorded here before the preset's cosine learning rate (8e-5 -> 1e-5) used a constant 5e-5;
# run() pins that, and the runs of the current preset set theirs after it (a later --set wins).
LR5=(--set rl.lr=5e-5 --set rl.lr_final=null)
PRESET_LR=(--set rl.lr=8e-5 --set rl.lr_final=1e-5)
# Likewise every run before 2026-11-25 kept responses cut at the length cap in the loss; run() pins that too,
# and the runs of the current preset set MT after it.
MT=(--set rl.mask_truncated=true)
run() { name=$1; shift; [ -f "$OUT/$name/summary.json" ] || longrl train --quiet --set out="$OUT" --set name="$name" "${LR5[@]}" --set rl.mask_truncated=false "$@"; }
run lp_s0 "${I60[@]}"
run nolp_s0 "${I60[@]}" "${NOLP[@]}"
python bench/experiments/kill_resume.py --reference "$OUT/lp_s0" --name kill_s0 --seed 1
run cp_s0 "${I60[@]}" --set sampling.strategy=curriculum+prioritized --set sampling.curriculum_warmup_iters=20 \
  --set sampling.hard_threshold=0.5
run partial_s0 "${I60[@]}" --set partial.enabled=true --set partial.budget=48 --set rl.lr_per_response=false
for s in 1 2; do
  run "lp_s$s" "${I60[@]}" --set seed=$s
  run "nolp_s$s" "${I60[@]}" --set seed=$s "${NOLP[@]}"
done
# 90 iterations with the penalty after 30 on the give-up 0.5 warm-up, against the same
# 90 iterations without it; weights 2 and 3; rest.
for s in 0 1 2; do
  run "i90w30_s$s" --set seed=$s "${OLD[@]}" "${I90[@]}"
  run "i90nolp_s$s" --set seed=$s "${OLD[@]}" "${I90[@]}" "${NOLP[@]}"
  run "i90w30x2_s$s" --set seed=$s "${OLD[@]}" "${I90[@]}" --set length_penalty.weight=2
  run "i90w30x3_s$s" --set seed=$s "${OLD[@]}" "${I90[@]}" --set length_penalty.weight=3
  run "i90rest_s$s" --set seed=$s "${OLD[@]}" "${I90[@]}" --set rl.algorithm=rest
done
# The give-up 0.8 warm-up on the 90-iteration schedule, with and without the penalty.
for s in 0 1 2; do
  run "gu80_s$s" --set seed=$s "${NEW[@]}" "${I90[@]}"
  run "gu80nolp_s$s" --set seed=$s "${NEW[@]}" "${I90[@]}" "${NOLP[@]}"
done
run gu95_s0 "${I90[@]}" --set sft.give_up_prob=0.95 --set sft.warm_dir="$OUT/_warm/give_up_0.95"
# Weight 2 with 90 penalised iterations (120 in all), against the same 120 iterations without it; seed 0.
run i120x2_s0 "${OLD[@]}" "${I90[@]}" --set rl.iterations=120 --set length_penalty.weight=2
run i120nolp_s0 "${OLD[@]}" "${I90[@]}" --set rl.iterations=120 "${NOLP[@]}"
# 120 iterations without the penalty (a preset before the current one): seed 0 with an evaluation every 30
# iterations up to 150 (its iteration-120 evaluation is the 120-iteration run's), seeds 1-2, and rest.
run gu80nolp150_s0 "${NEW[@]}" "${NOLP[@]}" --set rl.iterations=150 --set eval.every=30
for s in 1 2; do run "q120_s$s" --set seed=$s "${NEW[@]}" "${NOLP[@]}"; done
for s in 0 1 2; do run "q120rest_s$s" --set seed=$s "${NEW[@]}" "${NOLP[@]}" --set rl.algorithm=rest; done
# Where in the 120 iterations the penalty starts: after 90 (the preset before the cosine learning rate) or 60, weight 1;
# weight 0.5 after 30 or 60 (seed 0); and 2 epochs over each iteration's samples without it (seed 0).
for s in 0 1 2; do
  run "q120w90_s$s" --set seed=$s "${NEW[@]}"
  run "q120w60_s$s" --set seed=$s "${NEW[@]}" --set length_penalty.warmup_iters=60
done
for w in 30 60; do run "q120h${w}_s0" "${NEW[@]}" --set length_penalty.weight=0.5 --set length_penalty.warmup_iters=$w; done
run q120e2_s0 "${NEW[@]}" "${NOLP[@]}" --set rl.epochs=2 --set eval.every=30
# Partial rollouts, budget 96, without the penalty, against gu80nolp_s* (90 iterations: about as many
# trained responses as 130 partial iterations); every segment in the loss (seed 0).
PA=(--set partial.enabled=true --set partial.budget=96 --set rl.iterations=130)
OLDLR=(--set rl.lr_per_response=false)  # the partial runs recorded before the learning rate followed the batch
for s in 0 1 2; do run "q130p96_s$s" --set seed=$s "${NEW[@]}" "${NOLP[@]}" "${PA[@]}" "${OLDLR[@]}"; done
# Seeds 3-4 of both arms: the per-seed differences of seeds 0-2 spread too widely for a 3-seed mean.
for s in 3 4; do
  run "gu80nolp_s$s" --set seed=$s "${NEW[@]}" "${I90[@]}" "${NOLP[@]}"
  run "q130p96_s$s" --set seed=$s "${NEW[@]}" "${NOLP[@]}" "${PA[@]}" "${OLDLR[@]}"
done
run q130p96all_s0 "${NEW[@]}" "${NOLP[@]}" "${PA[@]}" "${OLDLR[@]}" --set partial.loss_segments=all
# 16 samples of 8 prompts per iteration instead of 8 of 16 (seed 0).
run q120k16_s0 "${NEW[@]}" --set rollout.k=16 --set rollout.batch_prompts=8
# The learning rate scaled by each iteration's trained responses (rl.lr_per_response, now the default).
for s in 0 1 2; do run "q130p96lr_s$s" --set seed=$s "${NEW[@]}" "${NOLP[@]}" "${PA[@]}" --set rl.lr_per_response=true; done
# A cosine learning-rate decay across the 120 iterations: 8e-5 -> 1e-5 and 1e-4 -> 1e-5.
for s in 0 1 2; do run "q120cos_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}"; done
for s in 0 1 2; do run "q120cos10_s$s" --set seed=$s "${NEW[@]}" --set rl.lr=1e-4 --set rl.lr_final=1e-5; done
# Curriculum + prioritized on the constant-lr preset (all levels for 40 iterations, then levels 2-3), and
# SIGKILL + resume of that preset's seed-0 run.
for s in 0 1 2; do
  run "q120cp_s$s" --set seed=$s "${NEW[@]}" --set sampling.strategy=curriculum+prioritized \
    --set sampling.curriculum_warmup_iters=40 --set sampling.hard_threshold=0.5
done
python bench/experiments/kill_resume.py --reference "$OUT/q120w90_s0" --name kill120_s0 --seed 1
# The current preset without the length penalty, against q120cos_s*.
for s in 0 1 2; do run "q120cosnolp_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${NOLP[@]}"; done
# Probes of the current preset: weight 3 for the last 30 iterations and warm-up traces giving up in 0.9
# of them (its own SFT), one seed each; sampling (and evaluating) at temperature 0.8, three seeds.
run q120cosw3_s0 --set seed=0 "${NEW[@]}" "${PRESET_LR[@]}" --set length_penalty.weight=3
run gu90cos_s0 --set seed=0 --set sft.give_up_prob=0.9 "${PRESET_LR[@]}"
for s in 0 1 2; do run "q120t08_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rollout.temperature=0.8; done
# Less SFT (60,000 traces, its own warm-up) and 160 iterations, the penalty for the last 30.
run s60i160_s0 --set seed=0 --set sft.examples=60000 --set rl.iterations=160 --set length_penalty.warmup_iters=130 "${PRESET_LR[@]}"
# GRPO (std-normalised advantages, ratio clip) on the current preset, against q120cos_s*.
for s in 0 1 2; do run "q120grpo_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.algorithm=grpo; done
# What makes GRPO's gain: mirror descent with std-normalised advantages, GRPO without them, mirror
# descent on length-normalised log-probs (GRPO's token mean); and two k1.5 knobs, tau and steps per iteration.
for s in 0 1 2; do run "q120mdstd_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.scale_rewards=group; done
for s in 0 1 2; do run "q120grponostd_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.algorithm=grpo --set rl.scale_rewards=none; done
for s in 0 1 2; do run "q120mdtm_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.token_mean=true; done
for s in 0 1 2; do run "q120tau1_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.tau=1.0; done
for s in 0 1 2; do run "q120mb4_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.mini_batches=4; done
# Seeds 3 and 4 for the preset, GRPO and the length-normalised forms.
for s in 3 4; do
  run "q120cos_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}"
  run "q120mdtm_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.token_mean=true
  run "q120grponostd_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.algorithm=grpo --set rl.scale_rewards=none
  run "q120grpo_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.algorithm=grpo
done
# The length penalty at weight 3 and 2 for the last 60 of the preset's 120 iterations, against q120cosnolp_s*.
for s in 0 1 2; do run "q120cosw3a60_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set length_penalty.weight=3 --set length_penalty.warmup_iters=60; done
for s in 0 1 2; do run "q120cosw2a60_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set length_penalty.weight=2 --set length_penalty.warmup_iters=60; done
# Two k1.5-form probes of the preset: a higher cosine peak (1.2e-4 -> 1e-5) and 150 iterations (the penalty
# still for the last 30; seeds 0-4), against q120cos_s*.
for s in 0 1 2; do run "q120lr12_s$s" --set seed=$s "${NEW[@]}" --set rl.lr=1.2e-4 --set rl.lr_final=1e-5; done
for s in 0 1 2 3 4; do run "q150cos_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set rl.iterations=150 --set length_penalty.warmup_iters=120; done
# long2short: the merge weight from 0.6 to 0.9, from the current preset's seed-0 long model.
L="$OUT/q120cos_s0/checkpoints/iter_120"; A="$OUT/l2s_alpha"
[ -d "$A/short" ] || longrl long2short short-sft --base "$OUT/_warm/preset" --out "$A/short" --seed 0 --quiet
for a in 0.6 0.7 0.8 0.9; do [ -d "$A/merge$a" ] || longrl long2short merge --long "$L" --short "$A/short" --alpha $a --out "$A/merge$a" --quiet; done
[ -f "$A/compare/compare.json" ] || longrl long2short compare "$L" "$A/short" "$A/merge0.6" "$A/merge0.7" "$A/merge0.8" "$A/merge0.9" --labels long,short,a0.6,a0.7,a0.8,a0.9 --seed 0 --out "$A/compare" --quiet
# long2short RL from the current preset's long models (seeds 0, 3, 4).
for s in 0 3 4; do
  L="$OUT/q120cos_s$s/checkpoints/iter_120"
  [ -d "$OUT/l2s_cur/l2s_s$s/checkpoints/iter_30" ] || longrl long2short rl --model "$L" --set seed=$s --out "$OUT/l2s_cur" --name "l2s_s$s" --quiet
  [ -f "$OUT/l2s_cur/compare_s$s/compare.json" ] || longrl long2short compare "$L" "$OUT/l2s_cur/l2s_s$s/checkpoints/iter_30" --labels long,l2s-rl --seed 0 --out "$OUT/l2s_cur/compare_s$s" --quiet
done
# The length penalty under mirror descent on length-normalised log-probs (rl.token_mean): without it, weight 2
# for the last 60 iterations, weight 3 for the last 90; against the summed-form runs above.
TM=(--set rl.token_mean=true)
for s in 0 1 2; do run "q120mdtmnolp_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${TM[@]}" "${NOLP[@]}"; done
for s in 0 1 2; do run "q120mdtmw2a60_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${TM[@]}" --set length_penalty.weight=2 --set length_penalty.warmup_iters=60; done
for s in 0 1 2; do run "q120mdtmw3a30_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${TM[@]}" --set length_penalty.weight=3 --set length_penalty.warmup_iters=30; done
# Curriculum + prioritized sampling on the current preset, against q120cos_s*.
for s in 0 1 2; do run "q120coscp_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" --set sampling.strategy=curriculum+prioritized \
  --set sampling.curriculum_warmup_iters=40 --set sampling.hard_threshold=0.5; done
# Responses cut at the 192-token cap out of the loss (rl.mask_truncated, now in the preset; seeds 0-4), and the
# same without the length penalty, against q120cos_s*.
for s in 0 1 2 3 4; do run "q120mt_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${MT[@]}"; done
for s in 0 1 2; do run "q120mtnolp_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${MT[@]}" "${NOLP[@]}"; done
# The current preset run again with held-out evaluations every 20 iterations (the curves), and back to back
# with the cosine-lr preset for RL time; its length penalty at weight 2 for the last 60 and weight 3 for the last 90.
for s in 0 1 2; do run "q120mtev_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${MT[@]}" --set eval.every=20; done
run q120cosT_s0 "${NEW[@]}" "${PRESET_LR[@]}"
run q120mtT_s0 "${NEW[@]}" "${PRESET_LR[@]}" "${MT[@]}"
for s in 0 1 2; do run "q120mtw2a60_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${MT[@]}" --set length_penalty.weight=2 --set length_penalty.warmup_iters=60; done
for s in 0 1 2; do run "q120mtw3a30_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${MT[@]}" --set length_penalty.weight=3 --set length_penalty.warmup_iters=30; done
# Curriculum + prioritized sampling on the current preset, and SIGKILL + resume on it, against q120mt_s*.
for s in 0 1 2; do run "q120mtcp_s$s" --set seed=$s "${NEW[@]}" "${PRESET_LR[@]}" "${MT[@]}" --set sampling.strategy=curriculum+prioritized \
  --set sampling.curriculum_warmup_iters=40 --set sampling.hard_threshold=0.5; done
[ -d "$OUT/killmt_s0" ] || python bench/experiments/kill_resume.py --reference "$OUT/q120mt_s0" --name killmt_s0 --seed 1
# long2short RL from the current preset's long models (seeds 0-2).
for s in 0 1 2; do
  L="$OUT/q120mt_s$s/checkpoints/iter_120"
  [ -d "$OUT/l2s_mt/l2s_s$s/checkpoints/iter_30" ] || longrl long2short rl --model "$L" --set seed=$s --out "$OUT/l2s_mt" --name "l2s_s$s" --quiet
  [ -f "$OUT/l2s_mt/compare_s$s/compare.json" ] || longrl long2short compare "$L" "$OUT/l2s_mt/l2s_s$s/checkpoints/iter_30" --labels long,l2s-rl --seed 0 --out "$OUT/l2s_mt/compare_s$s" --quiet
done
python bench/experiments/curves.py --run "current preset, seeds 0-2, held-out every 20=$OUT/q120mtev_s*" \
  --run "cosine-lr preset (cut responses in the loss), seeds 0, 3, 4=$OUT/q120cos_s[034]*" --out docs/quickstart_curves.png
# The ideal searcher's accuracy-tokens frontier against the warm-up and the current preset's long model.
for m in sft:"$OUT/_warm/preset" q120mt_s0:"$OUT/q120mt_s0/checkpoints/iter_120"; do
  [ -f "$OUT/analysis/${m%%:*}/eval.jsonl" ] || longrl eval --model "${m#*:}" --bench countdown --n 4 --seed 0 --max-tokens 192 \
    --out "$OUT/analysis/${m%%:*}"
done
python bench/experiments/search_floor.py --model "$OUT/_warm/preset" --orders 32 \
  --eval "$OUT/analysis/sft/eval.jsonl" "$OUT/analysis/q120mt_s0/eval.jsonl"
# A wider model (hidden 192: 1.8M parameters against 0.83M; its warm-up at lr 1.5e-3, since 3e-3 learned it worse),
# the current preset otherwise, without the length penalty, at weight 2 for the last 60 iterations and weight 3 for the last 90.
BIG=(--set model.tiny.hidden_size=192 --set sft.lr=1.5e-3 --set sft.warm_dir="$OUT/_warm/big192")
for s in 0 1 2; do
  run "big_nolp_s$s" --set seed=$s "${BIG[@]}" "${PRESET_LR[@]}" "${MT[@]}" "${NOLP[@]}"
  run "big_w2a60_s$s" --set seed=$s "${BIG[@]}" "${PRESET_LR[@]}" "${MT[@]}" --set length_penalty.weight=2 --set length_penalty.warmup_iters=60
  run "big_w3a30_s$s" --set seed=$s "${BIG[@]}" "${PRESET_LR[@]}" "${MT[@]}" --set length_penalty.weight=3 --set length_penalty.warmup_iters=30
done
