"""``longrl warmup-data``: long-CoT warm-up data by rejection sampling (k1.5 §2.2).

    longrl warmup-data --in SOURCE --out DIR --teacher MODEL_DIR [--engine hf|vllm] [--chat-template]
    longrl warmup-data --in SOURCE --out DIR --base-url URL [--teacher-model NAME] [--api-key-env VAR]
                       [--n 8] [--temperature 1.0] [--max-tokens N] [--keep all|shortest|first]
                       [--per-prompt K] [--limit N] [--seed S] [--instruction-file F] [--force]

DIR gets ``warmup.jsonl`` (the SFT file: ``longrl sft --data DIR/warmup.jsonl``), ``samples.jsonl``
(every sample with its verdict, reason, length and the stage that dropped it) and
``warmup_report.json`` (yields overall, per prompt, per difficulty; kept lengths; seconds; the
teacher). SOURCE is a prompt file, a dataset folder, ``hf:NAME[:SPLIT]`` or ``countdown``. Every
input is checked before the first sample, and DIR is written under a temporary name renamed
into place only when complete.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FILES = ("warmup.jsonl", "samples.jsonl", "warmup_report.json")
DEFAULT_MAX_TOKENS = 4096  # an endpoint's cap; a local teacher's is also bounded by its context


def add_arguments(p) -> None:
    from longrl.data.sources import BUILTIN
    from longrl.data.warmup import KEEP
    from longrl.models.precision import DTYPES
    from longrl.rollout.text import ENGINES

    p.add_argument("--in", dest="source", required=True, metavar="SOURCE",
                   help="prompts: a JSONL/Parquet file, a dataset folder, hf:NAME[:SPLIT] (see longrl.data.sources), "
                        f"or '{BUILTIN}' for the built-in task")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out once the new one is complete")
    teacher = p.add_mutually_exclusive_group(required=True)
    teacher.add_argument("--teacher", metavar="DIR", help="local teacher: a Hugging Face model folder")
    teacher.add_argument("--base-url", metavar="URL",
                         help="teacher behind an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--engine", choices=ENGINES, help="local teacher's rollout engine (default hf)")
    p.add_argument("--dtype", choices=DTYPES, help="local teacher's compute dtype (default float32)")
    p.add_argument("--chat-template", action="store_true", help="local teacher: wrap prompts with its chat template")
    p.add_argument("--teacher-model", metavar="NAME", help="endpoint's model (default: the first it lists)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="environment variable holding the endpoint's API key (default OPENAI_API_KEY, if set)")
    p.add_argument("--concurrency", type=int, default=8, help="endpoint requests at once (default 8)")
    p.add_argument("--n", type=int, default=8, help="samples per prompt (default 8)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, > 0 (default 1.0)")
    p.add_argument("--max-tokens", type=int,
                   help=f"max new tokens per sample (default {DEFAULT_MAX_TOKENS}; a local teacher: at most "
                        "what its context leaves after the longest prompt)")
    p.add_argument("--keep-truncated", action="store_true",
                   help="also keep correct responses cut at --max-tokens (default: dropped as 'truncated')")
    p.add_argument("--keep", choices=KEEP, default="all",
                   help="which correct, distinct samples to keep: all, the shortest, or the first (default all)")
    p.add_argument("--per-prompt", type=int, metavar="K",
                   help="keep at most K per prompt (default: every one for --keep all, 1 otherwise)")
    p.add_argument("--limit", type=int, help="use the first N prompts (countdown: how many to draw; default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--instruction-file", metavar="F",
                   help="the teacher instruction (a '{prompt}' in it places the prompt; else it goes first); "
                        "an empty file sends the prompts unchanged")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from longrl.data.warmup import build_report, load_source, read_instruction, run_warmup
    from longrl.errors import UserError
    from longrl.long2short.io import staged_output
    from longrl.rewards import ScoreRouter

    t_start = time.time()
    api_key = _check_args(args)
    out = _check_out(Path(args.out), args.force)
    instruction = read_instruction(args.instruction_file)
    if args.teacher and not (Path(args.teacher) / "config.json").is_file():
        raise UserError(f"--teacher {args.teacher}: not a Hugging Face model folder (no config.json there)")
    prompts = load_source(args.source, limit=args.limit, seed=args.seed)
    teacher, chunk = _open_teacher(args, api_key, prompts, instruction)
    per_prompt = args.per_prompt if args.per_prompt is not None else (None if args.keep == "all" else 1)
    print(f"warmup-data: {args.n} samples for each of {len(prompts)} prompts from {args.source}, teacher "
          f"{teacher.describe()['model']}, at most {teacher.max_new_tokens} new tokens, keep {args.keep}"
          + (f" (at most {per_prompt} per prompt)" if per_prompt else ""))
    router = ScoreRouter()
    try:
        with staged_output(out, replace=True) as tmp:  # --force and an empty folder were checked above
            with open(tmp / FILES[0], "w", encoding="utf-8") as sft, open(tmp / FILES[1], "w", encoding="utf-8") as aud:
                res = run_warmup(prompts, teacher, router, n=args.n, instruction=instruction, keep=args.keep,
                                 per_prompt=per_prompt, chunk=chunk, sft_out=sft, samples_out=aud,
                                 progress=not args.quiet, keep_truncated=args.keep_truncated)
            report = build_report(res, source=args.source, teacher=teacher.describe(), temperature=args.temperature,
                                  max_tokens=teacher.max_new_tokens, keep=args.keep, per_prompt=per_prompt,
                                  seed=args.seed, instruction=instruction, seconds=round(time.time() - t_start, 2))
            if report["kept"] == 0:
                raise UserError(f"no sample was kept ({report['samples']} samples; verifier reasons "
                                f"{report['reasons']}; dropped {report['dropped_by']}); nothing written")
            (tmp / FILES[2]).write_text(json.dumps(report, indent=2))
    finally:
        router.close()
        teacher.close()
    _print_report(report)
    print(f"written: {', '.join(str(out / f) for f in FILES)}\n"
          f"train on it: longrl sft --data {out / FILES[0]}")
    return 0


# ----------------------------------------------------------------------------- checks


def _check_args(args) -> str | None:
    """Numbers and option combinations; returns the API key named by --api-key-env (or None)."""
    from longrl.errors import UserError

    if args.n < 1:
        raise UserError(f"--n {args.n}: need at least 1 sample per prompt")
    if not args.temperature > 0:
        raise UserError(f"--temperature {args.temperature}: must be > 0 (rejection sampling needs varied samples)")
    for flag, v in (("--max-tokens", args.max_tokens), ("--per-prompt", args.per_prompt), ("--limit", args.limit),
                    ("--concurrency", args.concurrency)):
        if v is not None and v < 1:
            raise UserError(f"{flag} {v}: must be at least 1")
    if args.base_url:
        local = [f for f, v in (("--engine", args.engine), ("--dtype", args.dtype),
                                ("--chat-template", args.chat_template)) if v]
        if local:
            raise UserError(f"{', '.join(local)}: options of a local --teacher, not of --base-url "
                            "(the server applies its own chat template)")
    else:
        endpoint = [f for f, v in (("--teacher-model", args.teacher_model), ("--api-key-env", args.api_key_env)) if v]
        if endpoint:
            raise UserError(f"{', '.join(endpoint)}: options of an endpoint teacher (--base-url), not of --teacher")
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise UserError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
        return key
    return None


def _check_out(out: Path, force: bool) -> Path:
    from longrl.errors import UserError

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} already exists and is not empty; choose another folder or pass --force")
    return out


def _open_teacher(args, api_key: str | None, prompts, instruction: str):
    """The teacher and the prompts per teacher call; a local one has every prompt's length checked."""
    from longrl.data.warmup import EndpointTeacher, LocalTeacher, with_instruction

    if args.base_url:
        teacher = EndpointTeacher(args.base_url, model=args.teacher_model, api_key=api_key,
                                  max_new_tokens=args.max_tokens or DEFAULT_MAX_TOKENS,
                                  temperature=args.temperature, seed=args.seed, concurrency=args.concurrency)
        return teacher, max(1, -(-4 * args.concurrency // args.n))  # enough requests to keep the pool busy
    from longrl.models.loading import quiet_transformers
    from longrl.rollout.text import open_engine

    quiet_transformers()
    engine = args.engine or "hf"
    te = open_engine(args.teacher, engine=engine, dtype=args.dtype or "float32", chat_template=args.chat_template,
                     seed=args.seed, field="--teacher")
    asked = [with_instruction(p, instruction) for p in prompts]
    max_new = args.max_tokens
    if max_new is None:
        longest = max(len(te.encode(p).ids) for p in asked)
        max_new = min(DEFAULT_MAX_TOKENS, te.context - longest)
    teacher = LocalTeacher(te, model=str(args.teacher), engine=engine, max_new_tokens=max(1, max_new),
                           temperature=args.temperature, seed=args.seed)
    try:
        teacher.check_lengths(asked)
    except BaseException:
        teacher.close()
        raise
    return teacher, max(1, 256 // args.n)  # ~256 sequences per engine call (the engines' default batch)


def _print_report(r: dict) -> None:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    rows = [("prompts", r["prompts"]), ("samples", r["samples"]),
            ("verified correct (yield)", f"{r['correct']} ({pct(r['yield'])})"),
            ("prompts with a kept response", f"{r['prompts_with_kept']} ({pct(r['prompt_yield'])})"),
            ("kept responses", r["kept"]),
            ("kept tokens mean / median", f"{r['kept_tokens_mean']} / {r['kept_tokens_median']}"),
            ("all samples tokens mean", r["all_tokens_mean"])]
    rows += [(f"yield {k}", f"{pct(v['yield'])} ({v['prompts_with_kept']}/{v['prompts']} prompts kept)")
             for k, v in r["per_difficulty"].items()]
    rows += [("correct per prompt (0..n)", " ".join(str(v) for v in r["correct_per_prompt_histogram"].values())),
             ("seconds (teacher / verify / all)", f"{r['teacher_seconds']} / {r['verify_seconds']} / {r['seconds']}")]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("  reasons: " + ", ".join(f"{k}={v}" for k, v in r["reasons"].items()))
    if r["dropped_by"]:
        print("  dropped by: " + ", ".join(f"{k}={v}" for k, v in r["dropped_by"].items()))
