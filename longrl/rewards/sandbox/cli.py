"""``longrl sandbox``: run one program, serve the sandbox over HTTP, or generate test cases.

    longrl sandbox run FILE [--lang python|cpp] [--stdin FILE] [--time-limit S] [--memory-mb M]
    longrl sandbox serve [--host 127.0.0.1] --port P [--token T] [--concurrency N]
    longrl sandbox testgen --problems FILE --out FILE [--cases 50] [--solutions 10] [--min-valid 40]

Every command refuses to run untrusted code without bubblewrap unless ``--unsafe-no-isolation``
is given. Nothing heavy is imported until a command runs (``longrl --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from longrl.errors import UserError

_SUFFIX_LANG = {".py": "python", ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp", ".c++": "cpp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sandbox_cmd", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--unsafe-no-isolation", action="store_true",
                       help="run without bubblewrap (rlimits and a uid change only): trusted code only")

    r = sub.add_parser("run", help="run one program in the sandbox and print what it wrote")
    r.add_argument("file", help="source file (.py, .cpp)")
    r.add_argument("--lang", help="python or cpp (default: from the file's suffix)")
    r.add_argument("--stdin", help="file whose content is the program's standard input")
    r.add_argument("--time-limit", type=float, default=4.0, help="wall-clock seconds (default 4)")
    r.add_argument("--memory-mb", type=int, default=512, help="memory limit in MiB (default 512)")
    common(r)

    s = sub.add_parser("serve", help="serve the sandbox over HTTP for remote reward workers")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, required=True, help="port to listen on")
    s.add_argument("--token", default=os.environ.get("LONGRL_SANDBOX_TOKEN"),
                   help="bearer token clients must send (required off loopback; env LONGRL_SANDBOX_TOKEN)")
    s.add_argument("--concurrency", type=int, default=0, help="runs at once (default: CPU count)")
    common(s)

    t = sub.add_parser("testgen", help="generate test cases with CYaRon generators (k1.5 §2.3.5)")
    t.add_argument("--problems", required=True, help="JSONL: id, statement, generators, solutions")
    t.add_argument("--out", required=True, help="JSONL of kept problems as code prompts")
    t.add_argument("--cases", type=int, default=50, help="cases per generator (default 50)")
    t.add_argument("--solutions", type=int, default=10, help="ground-truth solutions used (default 10)")
    t.add_argument("--min-valid", type=int, default=40, help="valid cases a generator must make (default 40)")
    t.add_argument("--concurrency", type=int, default=0, help="runs at once (default: CPU count)")
    common(t)


def run(args: argparse.Namespace) -> int:
    return {"run": _run, "serve": _serve, "testgen": _testgen}[args.sandbox_cmd](args)


def _run(args: argparse.Namespace) -> int:
    from longrl.rewards.sandbox.executor import Limits, Sandbox, SandboxConfig, check_language

    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    lang = args.lang or _SUFFIX_LANG.get(path.suffix.lower())
    if lang is None:
        raise UserError(f"{path}: cannot tell the language from the suffix; pass --lang python|cpp")
    check_language(lang)
    stdin = b""
    if args.stdin:
        if not Path(args.stdin).is_file():
            raise UserError(f"{args.stdin}: no such file")
        stdin = Path(args.stdin).read_bytes()
    if args.time_limit <= 0 or args.memory_mb < 16:
        raise UserError("--time-limit must be > 0 and --memory-mb >= 16")
    limits = Limits(time_s=args.time_limit, memory_mb=args.memory_mb)
    with Sandbox(SandboxConfig(concurrency=1, limits=limits, unsafe_no_isolation=args.unsafe_no_isolation)) as sb:
        check_language(lang, sb.languages)
        res = sb.run(path.read_text(encoding="utf-8", errors="replace"), lang, stdin, limits)
    sys.stdout.buffer.write(res.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(res.stderr)
    print(f"[sandbox] {res.status}, exit {res.exit_code}, {res.wall_s * 1000:.0f} ms", file=sys.stderr)
    return 0 if res.status == "ok" else 1


def _serve(args: argparse.Namespace) -> int:
    from longrl.rewards.sandbox.executor import Sandbox, SandboxConfig
    from longrl.rewards.sandbox.server import make_server

    with Sandbox(SandboxConfig(concurrency=args.concurrency, unsafe_no_isolation=args.unsafe_no_isolation)) as sb:
        server = make_server(sb, args.host, args.port, args.token)
        host, port = server.server_address[:2]
        print(f"sandbox serving on http://{host}:{port} ({sb.isolation} isolation, "
              f"{len(sb.cells) // 2} concurrent runs, languages {sb.languages})", file=sys.stderr, flush=True)
        import signal

        def stop(signum: int, frame: object) -> None:
            raise SystemExit(0)  # unwinds through `with Sandbox`: warm processes are ended, not orphaned

        signal.signal(signal.SIGTERM, stop)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    return 0


def _testgen(args: argparse.Namespace) -> int:
    from longrl.rewards.testgen import generate_tests, load_problems

    problems = load_problems(args.problems)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept, _, _ = generate_tests(problems, n_cases=args.cases, n_solutions=args.solutions, min_valid=args.min_valid,
                                concurrency=args.concurrency, unsafe_no_isolation=args.unsafe_no_isolation,
                                log=lambda m: print(m, file=sys.stderr))
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:  # written whole, then renamed: nothing half-written
        for row in kept:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, out)
    print(f"wrote {len(kept)} problem(s) to {out}", file=sys.stderr)
    return 0
