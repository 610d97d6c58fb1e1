"""SIGKILL a quickstart run at a random moment, resume it, and compare with an uninterrupted run.

    python bench/experiments/kill_resume.py --reference runs/base_s0 [--name kill_s0] [--set k=v ...]

Starts ``longrl train`` with the reference run's config, kills it with SIGKILL at a random instant
after a random iteration (checkpoints every ``checkpoint.every`` iterations, so work since the last
one is lost and redone), resumes it with ``--resume``, then checks that every non-timing metric of
every iteration, every held-out evaluation and the list of trained prompt groups equal the
reference's exactly. Prints what it compared and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

TIMING = ("time/", "perf/", "eval/time_s")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path, help="a finished run with the same config")
    ap.add_argument("--name", default="kill_resume")
    ap.add_argument("--seed", type=int, default=None, help="seed of the kill moment (default: random)")
    args = ap.parse_args()
    ref = args.reference
    cfg = ref / "config.yaml"
    run_dir = ref.parent / args.name
    rng = random.Random(args.seed)
    import yaml

    tree = yaml.safe_load(cfg.read_text())
    iters, every = tree["rl"]["iterations"], tree["checkpoint"]["every"]
    after = rng.randint(min(every, iters - 1), iters - 1)  # past the first checkpoint, before the end
    delay = rng.uniform(0.0, 3.0)
    cmd = [sys.executable, "-m", "longrl.cli", "train", str(cfg), "--quiet", "--set", f"out={ref.parent}",
           "--set", f"name={args.name}"]
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "metrics.jsonl"
    while victim.poll() is None and len(_lines(metrics)) < after:
        time.sleep(0.05)
    time.sleep(delay)
    if victim.poll() is not None:
        print("the run ended before the kill; nothing tested", file=sys.stderr)
        return 1
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = len(_lines(metrics))
    pointer = run_dir / "checkpoints" / "latest"
    latest = pointer.read_text().strip() if pointer.exists() else "none (resumes from the warm start)"
    print(f"killed with SIGKILL {delay:.2f} s after iteration {after} was logged ({done} logged, "
          f"latest checkpoint {latest})")
    res = subprocess.run([sys.executable, "-m", "longrl.cli", "train", "--resume", str(run_dir), "--quiet"], check=False)
    if res.returncode != 0:
        print("resume failed", file=sys.stderr)
        return 1
    ok = True
    for name in ("metrics.jsonl", "eval.jsonl", "rollouts.jsonl"):
        a, b = _strip(_lines(ref / name)), _strip(_lines(run_dir / name))
        same = a == b
        ok &= same
        print(f"{name}: {len(a)} records, {'identical' if same else 'DIFFERENT'} (timing fields excluded)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
