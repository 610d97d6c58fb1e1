"""The long2short comparison of k1.5 §2.4 (Figure 7): every method from one long-CoT model.

    python bench/long2short.py --long runs/NAME/checkpoints/iter_120 --warm runs/_warm/<key>

Given the long-CoT model (after RL) and its SFT start, it runs, each through the ``longrl
long2short`` CLI exactly as a user would:

1. ``short``          short-CoT SFT from the SFT start (the built-in task's direct solutions)
2. ``merge``          weight average of long and short (α = 0.5)
3. ``shortest``       shortest-correct rejection sampling (n = 8) from long, then SFT of long
4. ``merge+shortest`` the same from the merged model
5. ``dpo``            DPO of long on shortest-correct positives and long/wrong negatives
6. ``l2s-rl``         long2short RL from long (length penalty from the start, max length 96)

then ``longrl long2short compare`` on the held-out set: a table of pass@1 against mean response
tokens, ``compare.json`` and ``compare.png`` under ``--out``. A step whose output folder exists is
skipped (rerun to continue after an interruption); a step that fails is reported and left out of
the comparison. ``--quick`` shrinks every step to a smoke test of the pipeline (seconds per step on
the tiny test models; the figures it prints mean nothing).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from longrl.cli import main as longrl


def _steps(a, out: Path) -> list[tuple[str, Path, list[str]]]:
    """(label, model folder it produces, CLI arguments) in order; later steps read earlier outputs."""
    t = ["--threads", str(a.threads), "--seed", str(a.seed), "--quiet"]
    sample = ["--data", a.data, "--limit", str(a.prompts), "--n", str(a.n), "--max-tokens", str(a.max_tokens)]
    rl_sets = [f"threads={a.threads}", f"seed={a.seed}", f"rl.iterations={a.rl_iters}"]
    if a.quick:
        rl_sets += ["rollout.batch_prompts=2", "rollout.k=2", "rollout.max_length=8", "data.heldout_per_level=1",
                    "sampling.pool_size=8", "eval.n_samples=1", "eval.greedy=false"]
    rl_run = out / "rl" / "l2s-rl"
    short, merge = out / "short", out / "merge"
    return [
        ("short", short, ["short-sft", "--base", a.warm, "--out", str(short), "--examples", str(a.short_examples),
                          "--lr", str(a.short_lr), *t]),
        ("merge", merge, ["merge", "--long", a.long, "--short", str(short), "--alpha", str(a.alpha),
                          "--out", str(merge)]),
        ("shortest", out / "shortest", ["shortest", "--model", a.long, *sample, "--train", "--lr", str(a.sft_lr),
                                         "--out", str(out / "shortest"), *t]),
        ("merge+shortest", out / "merge_shortest", ["shortest", "--model", str(merge), *sample, "--train",
                                                    "--lr", str(a.sft_lr), "--out", str(out / "merge_shortest"), *t]),
        ("dpo", out / "dpo", ["dpo", "--model", a.long, *sample, "--lr", str(a.dpo_lr), "--beta", str(a.beta),
                              "--out", str(out / "dpo"), *t]),
        ("l2s-rl", rl_run, ["rl", "--model", a.long, "--out", str(out / "rl"), "--name", "l2s-rl", "--quiet",
                            *[x for s in rl_sets for x in ("--set", s)]]),
    ]


def _model_of(label: str, folder: Path) -> Path | None:
    if label == "l2s-rl":
        from longrl.train.checkpoint import latest_checkpoint

        return latest_checkpoint(folder / "checkpoints") if (folder / "checkpoints").is_dir() else None
    return folder if (folder / "config.json").is_file() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--long", required=True, help="the long-CoT model (an RL checkpoint)")
    ap.add_argument("--warm", required=True, help="its SFT start (the warm checkpoint the RL run began from)")
    ap.add_argument("--out", default="runs/long2short", help="folder for every output (default runs/long2short)")
    ap.add_argument("--data", default="countdown", help="prompts for rejection sampling and DPO (default countdown)")
    ap.add_argument("--prompts", type=int, default=512, help="prompts sampled for shortest / DPO (default 512)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt (default 8)")
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--short-examples", type=int, default=8000)
    ap.add_argument("--short-lr", type=float, default=1e-3)
    ap.add_argument("--sft-lr", type=float, default=1e-4, help="shortest-RS fine-tuning learning rate")
    ap.add_argument("--dpo-lr", type=float, default=1e-5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--rl-iters", type=int, default=30)
    ap.add_argument("--eval-n", type=int, default=4, help="samples per held-out prompt in the comparison")
    ap.add_argument("--eval-limit", type=int, help="evaluate on the first N held-out prompts only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (meaningless figures)")
    a = ap.parse_args(argv)
    if a.quick:
        a.prompts, a.n, a.max_tokens, a.short_examples, a.rl_iters = 6, 4, 16, 32, 1
        a.eval_n, a.eval_limit = 1, a.eval_limit or 3
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    models, labels, failed = [a.long], ["long"], []
    for label, folder, args in _steps(a, out):
        if _model_of(label, folder) is None:
            print(f"== {label}: longrl long2short {' '.join(args)}", flush=True)
            t0 = time.time()
            rc = longrl(["long2short", *args])
            print(f"== {label}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
        model = _model_of(label, folder)
        if model is None:
            failed.append(label)
            continue
        models.append(str(model))
        labels.append(label)
    cmp = ["compare", *models, "--labels", ",".join(labels), "--n", str(a.eval_n), "--max-tokens",
           str(a.max_tokens), "--out", str(out / "compare"), "--threads", str(a.threads), "--seed", str(a.seed)]
    if a.eval_limit:
        cmp += ["--limit", str(a.eval_limit)]
    if a.quick:
        cmp += ["--no-greedy", "--quiet"]
    rc = longrl(["long2short", *cmp])
    if failed:
        print(f"left out (step failed): {', '.join(failed)}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
