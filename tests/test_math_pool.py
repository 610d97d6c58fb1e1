"""The grading worker pool: deadlines, pathological inputs, killed and broken workers."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from longrl.rewards.math import MathScorer
from longrl.rewards.math_pool import VerifyPool, verify_answer
from longrl.types import Prompt

TIMEOUT = 1.0  # s per answer in these tests; math-verify needs ~0.01 s on an ordinary answer
SLACK = 3.0  # s allowed beyond the timeout for killing and replacing a worker on a busy machine


@pytest.fixture(scope="module")
def scorer():
    s = MathScorer(timeout=TIMEOUT, workers=2, max_answer_chars=10**7)
    yield s
    s.close()


def prompt(ref: str) -> Prompt:
    return Prompt(id="p", text="Solve it.", reference=ref, task="math")


# (name, response, reasons it may end with). With max_answer_chars this large every answer
# reaches math-verify, so these exercise the pool's deadline, not the length guard.
PATHOLOGICAL = [
    ("power tower", "so \\boxed{9^{9^{9^{9}}}}", {"timeout"}),
    ("huge factorial", "\\boxed{1000000!}", {"timeout"}),
    (
        "1000-level braces",
        "\\boxed{" + "{" * 1000 + "1" + "}" * 1000 + "}",
        {"timeout", "wrong", "parse_error", "crash"},
    ),
    (
        "1000-level fractions",
        "\\boxed{" + "\\frac{1}{" * 1000 + "2" + "}" * 1000 + "}",
        {"timeout", "wrong", "parse_error", "crash"},
    ),
    ("100k digits", "\\boxed{" + "7" * 100_000 + "}", {"timeout", "wrong", "parse_error", "crash"}),
    ("1 MB response", "word " * 200_000 + "\\boxed{" + "9" * 50 + "}", {"wrong"}),
    ("1 MB of braces", "{" * 1_000_000, {"no_answer"}),
    (
        "invalid UTF-8",
        b"\xff\xfe\xfd \\boxed{5\xff}".decode("utf-8", "surrogateescape"),
        {"wrong", "parse_error"},
    ),
    ("control characters", "\x00\x1b[2J\\boxed{\x07" + "\x01" * 100 + "5}\x7f", {"wrong"}),
]


@pytest.mark.parametrize("name, response, reasons", PATHOLOGICAL, ids=[p[0] for p in PATHOLOGICAL])
def test_pathological_inputs_end_within_the_timeout(scorer, name, response, reasons):
    t = time.perf_counter()
    (score,) = scorer([prompt("3")], [response])
    elapsed = time.perf_counter() - t
    assert score.value == 0.0
    assert score.reason in reasons, (score.reason, score.parts)
    assert elapsed < TIMEOUT + SLACK, f"{name} took {elapsed:.1f} s"


def test_timeouts_are_counted_and_workers_replaced(scorer):
    before = scorer.pool.restarts
    scores = scorer(
        [prompt("3")] * 4, ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{3}", "\\boxed{7^{7^{7^{7}}}}", "\\boxed{3.0}"]
    )
    assert [s.reason for s in scores] == ["timeout", "ok", "timeout", "ok"]
    assert scorer.pool.restarts == before + 2
    assert scorer.counts["timeout"] >= 2
    assert all(s.parts["seconds"] < TIMEOUT + SLACK for s in scores)
    # The replacement workers grade normally.
    assert [s.reason for s in scorer([prompt("\\frac12")] * 2, ["\\boxed{0.5}", "\\boxed{2}"])] == [
        "ok",
        "wrong",
    ]


def test_worker_killed_mid_check_is_replaced():
    with VerifyPool(workers=1, timeout=30) as pool:
        assert [o.status for o in pool.run([("1", "1")])] == ["ok"]  # warm: the worker is ready
        victim = pool.pids[0]
        killer = threading.Timer(0.5, os.kill, (victim, signal.SIGKILL))
        killer.start()
        t = time.perf_counter()
        out = pool.run([("9^{9^{9^{9}}}", "1"), ("2", "2")])
        killer.join()
        assert time.perf_counter() - t < 10  # well before the 30 s deadline
        assert [o.status for o in out] == ["crash", "ok"]  # the check queued behind it is re-run
        assert pool.restarts == 1 and pool.pids[0] != victim
        assert [o.status for o in pool.run([("x=2", "2")])] == ["ok"]


def test_workers_that_cannot_start_raise_instead_of_hanging():
    # 1 MiB more address space is too little to import sympy: every fresh (spawned) worker dies
    # while starting, and the pool gives up after a few tries instead of waiting forever.
    pool = VerifyPool(workers=1, timeout=5, memory_mb=1, start_method="spawn")
    t = time.perf_counter()
    with pytest.raises(RuntimeError, match="failed to start"):
        pool.run([("1", "1")])
    assert time.perf_counter() - t < 60
    pool.close()


def test_grading_from_a_thread_works(scorer):
    # math-verify's own timeout uses signal.alarm, which raises off the main thread; the pool's
    # workers run it with its timeouts off, so a trainer may score from any thread.
    out = []
    th = threading.Thread(target=lambda: out.extend(scorer([prompt("4")], ["\\boxed{2+2}"])))
    th.start()
    th.join(30)
    assert [s.reason for s in out] == ["ok"]


def test_verify_answer_statuses_in_process():
    assert verify_answer("\\frac{6}{8}", "0.75") == "ok"
    assert verify_answer("4", "5") == "wrong"
    assert verify_answer("x = 5", "5") == "ok"
    assert verify_answer("\\text{Evelyn}", "\\text{Evelyn}") == "ok"
    assert verify_answer("@@@", "5") == "parse_error"
    assert verify_answer("5", "") == "bad_reference"


@pytest.mark.parametrize(
    "answer, reference, status",
    [
        # math-verify alone accepts these: it rounds to 6 decimals before comparing (NOTES.md).
        ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", "wrong"),
        ("10^{-20}", "2 \\cdot 10^{-20}", "wrong"),
        ("x = 10^{-20}", "2 \\cdot 10^{-20}", "wrong"),
        ("0.00010001", "10^{-4}", "wrong"),
        # ... and these stay correct.
        ("2^{-99}", "\\frac{1}{2^{99}}", "ok"),
        ("0.0001", "10^{-4}", "ok"),
        ("0.333333", "\\frac{1}{3}", "ok"),
        ("50\\%", "0.5", "ok"),
    ],
)
def test_tiny_numbers_are_compared_exactly(answer, reference, status):
    assert verify_answer(answer, reference) == status


def test_pool_rejects_bad_settings_and_use_after_close():
    with pytest.raises(ValueError):
        VerifyPool(workers=0)
    with pytest.raises(ValueError):
        VerifyPool(timeout=0)
    pool = VerifyPool(workers=1, timeout=5)
    pool.close()
    pool.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        pool.run([("1", "1")])


def test_concurrent_calls_from_threads_get_their_own_results(scorer):
    results = {}

    def work(k):
        results[k] = scorer([prompt(str(k))] * 6, [f"\\boxed{{{k}}}", f"\\boxed{{{k + 1}}}"] * 3)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert {k: [s.reason for s in v] for k, v in results.items()} == {
        k: ["ok", "wrong"] * 3 for k in range(4)
    }


def test_a_check_waiting_behind_a_hung_one_is_taken_over():
    # Both checks share a reference whose home is worker 0, so worker 0 is sent both (one runs,
    # one waits). Worker 1, idle, takes the waiting one over: the two hangs overlap and the
    # batch ends after one timeout, not two.
    import zlib

    ref = next(r for r in map(str, range(100)) if zlib.crc32(r.encode()) % 2 == 0)
    with VerifyPool(workers=2, timeout=TIMEOUT * 2) as pool:
        pool.run([("1", "1"), ("2", "2")])  # both workers ready
        t = time.perf_counter()
        out = pool.run([("9^{9^{9^{9}}}", ref), ("7^{7^{7^{7}}}", ref)])
        elapsed = time.perf_counter() - t
    assert [o.status for o in out] == ["timeout", "timeout"]
    assert elapsed < TIMEOUT * 2 * 1.75, elapsed


def test_a_forked_copy_does_not_stop_the_parents_workers():
    with VerifyPool(workers=1, timeout=5) as pool:
        pool.run([("1", "1")])
        pid = os.fork()
        if pid == 0:  # the child drops its copy of the pool, as a data-loader worker would
            try:
                pool.close()
            finally:
                os._exit(0)  # never return into pytest from the child
        os.waitpid(pid, 0)
        assert [o.status for o in pool.run([("2", "2")])] == ["ok"]
        assert pool.restarts == 0


# A script read on stdin has ``__main__.__file__ == "<stdin>"``: multiprocessing used to tell every
# forkserver/spawn worker to re-run that "file", so each died before it started and the pool blamed
# math-verify or memory_mb. Workers must not need the parent's main module at all.
STDIN_SCRIPT = """
from longrl.rewards.math import MathScorer
from longrl.rewards.math_pool import VerifyPool
from longrl.types import Prompt

with MathScorer(timeout=30, workers=1) as scorer:
    (score,) = scorer([Prompt(id="p", text="2+2?", reference="4", task="math")], ["so \\\\boxed{4}"])
with VerifyPool(workers=1, timeout=30, start_method="spawn") as pool:
    (spawned,) = pool.run([("4", "4")])
print("graded", score.reason, spawned.status)
"""


@pytest.mark.parametrize("how", ["stdin", "-c"])
def test_a_script_without_a_main_file_can_grade(how, tmp_path):
    argv = [sys.executable, "-"] if how == "stdin" else [sys.executable, "-c", STDIN_SCRIPT]
    proc = subprocess.run(argv, input=STDIN_SCRIPT if how == "stdin" else "", capture_output=True, text=True,
                          cwd=tmp_path, timeout=240, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "graded ok ok", proc.stderr[-3000:]
