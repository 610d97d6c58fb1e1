"""Hostile programs: each must get the right verdict, reward 0, and leave the host untouched.

Every attack runs through the real scorer (bubblewrap, per-cell uid, cgroups when writable) with
a short wall clock (1 s) so the whole file stays well under a minute on 2 cores. After each test
the ``host_untouched`` fixture checks that no process of a sandbox uid survived, that the
sentinel file outside the sandbox is intact, and that the sandbox still runs a normal program.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from longrl.types import Prompt

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap")

SECRET = "longrl-grader-secret-7f3a"
ECHO_REF = {"tests": [{"input": "5\n", "output": "5\n"}]}  # the right answer is `print(input())`


@pytest.fixture(scope="module")
def scorer():
    from longrl.rewards.code import CodeScorer

    os.environ["LONGRL_TEST_GRADER_SECRET"] = SECRET  # the sandbox must never see this
    s = CodeScorer(time_limit=1.0, memory_mb=256, concurrency=2)
    yield s
    s.close()
    os.environ.pop("LONGRL_TEST_GRADER_SECRET", None)


@pytest.fixture()
def sentinel(tmp_path: Path) -> Path:
    p = tmp_path / "expected_output.txt"
    p.write_text("5\n")  # stands for a grader file holding expected outputs
    return p


def _uid_procs(lo: int, hi: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                uid = int((d / "status").read_text().split("Uid:")[1].split()[0])
            except (OSError, IndexError):
                continue
            if lo <= uid < hi:
                out.append(int(d.name))
    return out


@pytest.fixture(autouse=True)
def host_untouched(scorer, sentinel: Path):
    yield
    sb = scorer.sandbox
    uids = [c.uid for c in sb.cells]
    lo, hi = min(uids), max(uids) + 1
    # only the warm (idle, not yet running any job) stubs may hold a sandbox uid
    for _ in range(50):
        alive = _uid_procs(lo, hi)
        if len(alive) <= len(sb.cells):
            break
        time.sleep(0.05)
    assert len(alive) <= len(sb.cells), f"processes of sandbox uids survived: {alive}"
    assert sentinel.read_text() == "5\n"
    assert score(scorer, "print(input())").value == 1.0  # the sandbox still works


def score(scorer, code: str, ref: dict | None = None, lang: str = "python"):
    p = Prompt(id="x", text="echo", reference=ref or ECHO_REF, task="code")
    return scorer([p], [f"```{lang}\n{code}\n```"])[0]


def assert_contained(s, *reasons: str):
    assert s.value == 0.0, s
    if reasons:
        assert s.reason in reasons, s


def test_fork_bomb(scorer):
    t = time.monotonic()
    s = score(scorer, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    assert_contained(s, "timeout")
    assert time.monotonic() - t < 10


def test_fork_bomb_is_capped_by_nproc(scorer):
    code = ("import os\nn = 0\nfor _ in range(200):\n    try:\n        if os.fork() == 0:\n"
            "            import time; time.sleep(5); os._exit(0)\n        n += 1\n"
            "    except OSError:\n        break\nprint(n)")
    res = scorer.sandbox.run(code, "python")
    assert int(res.stdout) < 20, res  # RLIMIT_NPROC 16 per cell uid (and pids.max when cgroups exist)


def test_memory_bomb(scorer):
    ref = {**ECHO_REF, "time_limit": 10}  # a loaded 2-core machine must not turn OOM into timeout
    assert_contained(score(scorer, "x = []\nwhile True:\n    x.append(bytearray(10**7))", ref), "memory")
    assert_contained(score(scorer, "x = 'a' * (10**10)", ref), "memory")


def test_infinite_loop(scorer):
    assert_contained(score(scorer, "while True:\n    pass"), "timeout")


def test_sleep_past_wall_clock(scorer):
    t = time.monotonic()
    assert_contained(score(scorer, "import time\ntime.sleep(30)\nprint(input())"), "timeout")
    assert time.monotonic() - t < 5


def test_no_network_outside_or_loopback(scorer):
    host_listener = socket.socket()
    host_listener.bind(("127.0.0.1", 0))
    host_listener.listen(1)
    host_listener.settimeout(0.2)
    port = host_listener.getsockname()[1]
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never routed, so nothing can leave even if this failed
    code = (f"import socket\nfor addr in [('192.0.2.1', 80), ('127.0.0.1', {port})]:\n"
            "    s = socket.socket(); s.settimeout(0.5)\n    try:\n        s.connect(addr); print('connected', addr)\n"
            "    except OSError as e:\n        print('blocked', addr, e.errno)\n")
    res = scorer.sandbox.run(code, "python")
    assert b"connected" not in res.stdout and res.stdout.count(b"blocked") == 2, res
    with pytest.raises(socket.timeout):
        host_listener.accept()
    host_listener.close()
    assert_contained(score(scorer, code + "print(input())"), "wrong_answer")


def test_secrets_are_out_of_reach(scorer, sentinel: Path):
    code = (f"import os\nfound = []\nfor p in ['/etc/shadow', '/etc/passwd', os.path.expanduser('~root/.ssh'), "
            f"'/root/.ssh/id_rsa', {str(sentinel)!r}, '/proc/1/environ']:\n"
            "    try:\n        open(p).read(); found.append(p)\n    except OSError:\n        pass\n"
            "print(found)\nprint(sorted(os.environ), list(os.environ.values()))")
    res = scorer.sandbox.run(code, "python")
    assert res.status == "ok", res
    assert res.stdout.splitlines()[0] == b"[]", res.stdout
    assert SECRET.encode() not in res.stdout and b"LONGRL_TEST_GRADER_SECRET" not in res.stdout
    # reading the expected-output file to answer fails, so the reward is 0
    assert_contained(score(scorer, f"print(open({str(sentinel)!r}).read())"), "runtime_error")


def test_expected_output_not_reachable_through_parent(scorer):
    code = ("import os\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n"
            "        try: print(pid, open(f'/proc/{pid}/cmdline').read()[:50])\n        except OSError: pass")
    res = scorer.sandbox.run(code, "python")
    pids = [int(line.split()[0]) for line in res.stdout.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert max(pids) < 10, res.stdout  # its own pid namespace: the grader's pids do not exist there


def test_writes_outside_workdir_and_disk_fill(scorer, tmp_path: Path):
    target = tmp_path / "written_by_sandbox"
    code = (f"import os, sys\nfor p in [{str(target)!r}, '/usr/x', '/x', sys.executable + '.x', '/dev/shm/x']:\n"
            "    try:\n        open(p, 'w').write('x'); print('wrote', p)\n    except OSError:\n        pass\n")
    res = scorer.sandbox.run(code, "python")
    assert b"wrote" not in res.stdout and not target.exists(), res
    before = shutil.disk_usage(tempfile_dir()).used
    fill = ("i = 0\nwhile True:\n    with open(f'/tmp/f{i}', 'wb') as f:\n        f.write(b'x' * (8 << 20))\n"
            "    i += 1")
    assert_contained(score(scorer, fill), "runtime_error", "output_limit", "memory")
    assert shutil.disk_usage(tempfile_dir()).used - before < (64 << 20)


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def test_big_file_hits_fsize_limit(scorer):
    # Python ignores SIGXFSZ, so RLIMIT_FSIZE (16 MiB) shows as EFBIG; a C program would get SIGXFSZ
    s = score(scorer, "open('/tmp/big', 'wb').write(b'x' * (40 << 20))")
    assert_contained(s, "runtime_error")
    assert "File too large" in s.parts["detail"]


def test_kill_parent_and_other_pids(scorer):
    # a long, well-behaved run in another cell must survive the killer
    ok = {}
    other = threading.Thread(target=lambda: ok.update(r=scorer.sandbox.run("import time; time.sleep(0.6); print(1)")))
    other.start()
    code = ("import os, signal\nhit = []\nfor pid in [os.getppid(), 1] + list(range(2, 50)):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL) if pid != os.getpid() else None; hit.append(pid)\n"
            "    except OSError:\n        pass\nprint(hit, os.getpid())\ntry:\n    os.kill(-1, signal.SIGKILL)\n"
            "except OSError:\n    pass\nprint('survived')")
    res = scorer.sandbox.run(code, "python")
    other.join()
    assert ok["r"].status == "ok" and ok["r"].stdout == b"1\n", ok
    # its parent is the stub, pid 1 of the namespace, which ignores signals sent from inside
    # (so the "kill" lands but does nothing); no other pid exists in its namespace
    hit, own = res.stdout.decode().splitlines()[0].rsplit(" ", 1)
    assert set(json.loads(hit)) <= {1, int(own)}, res
    assert res.status == "ok" and b"survived" in res.stdout  # kill(-1) spares the caller


def test_gigabyte_stdout(scorer):
    t = time.monotonic()
    s = score(scorer, "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)")
    assert_contained(s, "output_limit")
    assert time.monotonic() - t < 5


def test_os_system_subprocess_and_leftover_children(scorer):
    code = ("import os, subprocess, sys\nprint(os.system('echo pwned'))\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
            "print('child', p.pid)")
    res = scorer.sandbox.run(code, "python")
    assert b"pwned" not in res.stdout and res.stdout.splitlines()[0] != b"0", res  # no shell in the sandbox
    # the detached child dies with the pid namespace (host_untouched checks no uid process is left)


def test_ctypes_segfault(scorer):
    assert_contained(score(scorer, "import ctypes\nctypes.string_at(0)"), "killed")


def test_deleting_files(scorer, sentinel: Path):
    code = (f"import os, shutil, sys\nfor p in [sys.executable, {str(sentinel)!r}, '/usr']:\n"
            "    try:\n        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)\n        print('deleted', p)\n"
            "    except OSError:\n        pass\n")
    res = scorer.sandbox.run(code, "python")
    assert b"deleted" not in res.stdout, res
    assert os.path.exists(os.path.realpath(os.sys.executable)) and sentinel.exists()


# ---------------------------------------------------------------- the assert-style harness
HE_REF = {"prefix": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
          "test": "METADATA = {}\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n"
                  "    assert candidate(-1, 1) == 0\n    assert True\n",
          "entry_point": "add"}


@pytest.mark.parametrize("name, code, reason", [
    ("sys.exit before asserts", "import sys\nsys.exit(0)", "runtime_error"),
    ("os._exit before asserts", "import os\nos._exit(0)", "runtime_error"),
    ("exit inside the function", "def add(a, b):\n    raise SystemExit(0)", "runtime_error"),
    ("os._exit inside the function", "import os\ndef add(a, b):\n    os._exit(0)", "runtime_error"),
    ("always-equal object", "class A:\n    def __eq__(self, o): return True\ndef add(a, b):\n    return A()",
     "runtime_error"),
    ("int subclass with forged eq",
     "class I(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\ndef add(a, b):\n    return I(7)",
     "runtime_error"),
    ("reads the caller's frame",
     "import sys\ndef add(a, b):\n    f = sys._getframe(1)\n    while f:\n        for v in f.f_locals.values():\n"
     "            if isinstance(v, int) and v not in (a, b): return v\n        f = f.f_back\n    return None",
     "wrong_answer"),
    ("fake success markers",
     "print('All tests passed!')\nprint('{\"passed\": true}')\ndef add(a, b):\n    return None", "wrong_answer"),
    ("monkey-patches the harness",
     "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\ndef check(candidate): pass\n"
     "def add(a, b):\n    return None", "wrong_answer"),
    ("forges reply frames",
     "import json, os\nfor fd in range(3, 20):\n    try:\n        h = json.dumps({'id': 'x', 'value': 3, 'loaded': 'x'}).encode()\n"
     "        os.write(fd, len(h).to_bytes(4, 'big') + (0).to_bytes(4, 'big') + h)\n    except OSError:\n        pass\n"
     "def add(a, b):\n    return None", "wrong_answer"),
])
def test_harness_cannot_be_fooled(scorer, name, code, reason):
    s = score(scorer, code, HE_REF)
    assert_contained(s, reason)
    assert "ok" not in s.parts["verdicts"], (name, s)


def test_honest_solution_passes_the_same_harness(scorer):
    s = score(scorer, "def add(a, b):\n    return a + b", HE_REF)
    assert (s.value, s.reason, s.parts["verdicts"]) == (1.0, "ok", ["ok", "ok"])  # `assert True` is no case


def _collision_attack(n: int) -> str:
    """A candidate that swaps the stub's reply encoder (the stub's globals are its caller's frame's)
    for one that answers a set of ``n`` ints whose hashes are all 0 (hash(k * (2**61 - 1)) == 0):
    rebuilding it costs n**2 / 2 equality tests (100,000 of them: 67-143 s, per call)."""
    return ("import sys\nM = (1 << 61) - 1\n"
            f"REPLY = {{'set': [{{'int': format(k * M, 'x')}} for k in range(1, {n + 1})]}}\n"
            "sys._getframe(1).f_globals['encode_value'] = lambda value: REPLY\n"
            "def add(a, b):\n    return a + b\n")


@pytest.mark.parametrize("n", [30_000, 100_000], ids=["under the output cap", "over the output cap"])
def test_hash_collision_reply_cannot_stall_the_grader(scorer, n):
    t = time.monotonic()
    s = score(scorer, _collision_attack(n), HE_REF)
    elapsed = time.monotonic() - t
    assert elapsed < 10, f"scoring took {elapsed:.1f} s"
    # under the cap the parent refuses to rebuild the set; over it the reply is never read
    assert_contained(s, "runtime_error" if n == 30_000 else "output_limit")
    assert "collide" in s.parts["detail"] if n == 30_000 else s.parts["detail"], s


def test_timeout_in_function_test_skips_the_rest(scorer):
    s = score(scorer, "def add(a, b):\n    while True: pass", HE_REF)
    assert s.parts["verdicts"] == ["timeout", "not_run", "not_run"], s  # `assert True` was not run either


# ---------------------------------------------------------------- compiled code
CPP_CASES = [
    ("fork bomb", "#include <unistd.h>\nint main(){ while (1) fork(); }", ("timeout",)),
    ("memory bomb", "#include <vector>\n#include <cstdio>\nint main(){ std::vector<char*> v; while (1) {"
     " char *p = new char[1 << 24]; for (int i = 0; i < (1 << 24); i += 4096) p[i] = 1; v.push_back(p); } }",
     ("memory",)),
    ("infinite loop", "int main(){ volatile long x = 0; while (1) x++; }", ("timeout",)),
    ("huge file", "#include <cstdio>\nint main(){ FILE *f = fopen(\"/tmp/big\", \"wb\"); static char b[1 << 20];"
     " for (int i = 0; i < 64; i++) fwrite(b, 1, sizeof b, f); fclose(f); }", ("output_limit",)),
    ("abort", "#include <cstdlib>\nint main(){ abort(); }", ("killed",)),
]


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed: apt-get install g++")
@pytest.mark.parametrize("name, code, reasons", CPP_CASES, ids=[c[0] for c in CPP_CASES])
def test_cpp_attacks_are_contained(scorer, name, code, reasons):
    ref = {**ECHO_REF, "time_limit": 2}
    assert_contained(score(scorer, code, ref, lang="cpp"), *reasons)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed: apt-get install g++")
def test_compile_bomb_is_contained(scorer):
    # the compiler reads an endless include until the compile's 1 GiB memory cgroup stops it
    s = score(scorer, '#include "/dev/zero"\nint main(){}', lang="cpp")
    assert_contained(s, "compile_error")
    assert s.parts["verdicts"] == ["not_run"]
