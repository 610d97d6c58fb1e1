# The in-sandbox stub: the first (and only trusted) code that runs in a warm sandbox process.
#
# It is never imported by longrl. The parent pastes ``_codec.py`` and this file into one source
# string and starts ``python -I -S -c SOURCE CONFIG`` inside bubblewrap, ahead of need (the warm
# pool): by the time a job arrives the interpreter is up, ``os``/``marshal``/``resource`` are loaded
# and privileges are gone, so a run costs a few milliseconds instead of an interpreter start.
#
# Life of one process: (1) as root inside the namespaces, drop to the cell's own uid (so
# RLIMIT_NPROC means something: it is per real uid and does nothing for root, NOTES "Sandbox");
# (2) send READY on the reply channel; (3) read exactly one job; (4) lower the rlimits for it;
# (5) become the job: exec the Python code in a fresh ``__main__``, exec a compiled binary, run the
# compiler, or serve function calls. One process, one job: the next job gets a fresh sandbox.
#
# Nothing here is a security boundary against the code it runs: the untrusted code can rewrite
# this stub's memory. The parent trusts only what it observes from outside (exit status, captured
# bytes, replies that carry the per-call nonce it chose) and decides every verdict itself.
import marshal
import os
import sys

# Parent -> stub messages are marshal data (trusted, and marshal is built in: no import cost);
# stub -> parent replies are JSON, which the parent parses as untrusted. ``json`` costs ~8 ms of
# start-up (it pulls in re and enum), so plain runs never import it: their only reply is READY.
CFG = marshal.loads(bytes.fromhex(sys.argv[1]))
R, W = CFG["rfd"], CFG["wfd"]  # job channel (parent -> stub) and reply channel (stub -> parent)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send_raw(head, payload=b""):
    _write_all(W, len(head).to_bytes(4, "big") + len(payload).to_bytes(4, "big") + head + payload)


def send(obj, payload=b""):
    import json

    send_raw(json.dumps(obj).encode(), payload)


def _read_exact(n):
    chunks, got = [], 0
    while got < n:
        b = os.read(R, min(n - got, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _default_signals():
    # Python ignores SIGPIPE and SIGXFSZ, and ignored signals stay ignored across exec: a
    # compiled program must get the defaults, so that RLIMIT_FSIZE kills it (SIGXFSZ) as it
    # would anywhere else. (_signal, not signal: that one imports enum, ~4 ms.)
    import _signal

    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)


def recv():
    h = _read_exact(8)
    if h is None:
        return None, b""
    head = _read_exact(int.from_bytes(h[:4], "big"))
    payload = _read_exact(int.from_bytes(h[4:], "big")) or b""
    return marshal.loads(head), payload


if CFG.get("uid") is not None and os.getuid() == 0:
    os.setgroups([])
    os.setresgid(CFG["uid"], CFG["uid"], CFG["uid"])
    os.setresuid(CFG["uid"], CFG["uid"], CFG["uid"])
os.chdir(CFG["workdir"])
sys.path[:0] = CFG.get("pythonpath", [])  # -I ignores PYTHONPATH; extra packages are bound here
os.umask(0o077)
import resource  # noqa: E402 - after the drop: nothing before it needs it (a ~2.5 ms dlopen)

for _p in CFG.get("preload", ()):
    __import__(_p)  # e.g. cyaron for test generators: paid during warm-up, not per run
send_raw(b'{"ready": true}')

job, blob = recv()
if job is None:  # the pool is shutting down
    os._exit(0)

lim = job["limits"]
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))  # SIGXCPU, then SIGKILL
resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize"], lim["fsize"]))  # larger writes: SIGXFSZ
resource.setrlimit(resource.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
if lim.get("nproc"):
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
if lim.get("as_bytes"):
    resource.setrlimit(resource.RLIMIT_AS, (lim["as_bytes"], lim["as_bytes"]))
_hard_stack = resource.getrlimit(resource.RLIMIT_STACK)[1]
_want_stack = lim["stack"] if _hard_stack == resource.RLIM_INFINITY else min(lim["stack"], _hard_stack)
resource.setrlimit(resource.RLIMIT_STACK, (_want_stack, _hard_stack))

kind = job["kind"]
for name, mode in job.get("files", {}).items():  # the payload holds the files back to back
    size = job["sizes"][name]
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    _write_all(fd, blob[:size])
    os.close(fd)
    blob = blob[size:]
stdin_bytes = blob  # what is left of the payload is the program's stdin
fd = os.open(".stdin", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
_write_all(fd, stdin_bytes)
os.lseek(fd, 0, 0)
os.dup2(fd, 0)
os.close(fd)
os.unlink(".stdin")
del blob, stdin_bytes

if kind == "compile":
    pid = os.fork()
    if pid == 0:
        os.close(R)
        os.close(W)
        os.dup2(2, 1)  # compiler diagnostics go to stderr
        _default_signals()
        os.execv(job["argv"][0], job["argv"])
    _, status = os.waitpid(pid, 0)
    out = b""
    if os.waitstatus_to_exitcode(status) == 0 and os.path.exists(job["collect"]):
        with open(job["collect"], "rb") as f:
            out = f.read()
    send_raw(b'{"compiled": %d}' % os.waitstatus_to_exitcode(status), out)
    os._exit(0)

if kind != "compile":
    # Run the job in a child and stay behind as the namespace's pid 1 (bwrap --as-pid-1): the
    # kernel ignores signals a pid 1 sends itself (abort, kill(getpid())), so the job must not be
    # pid 1; and pid 1 must reap what the job orphans. The job's exit status becomes ours,
    # a death by signal N as 128 + N (what bwrap would report).
    #
    # Pid 1 then reports that status on the reply channel, which only it holds once the job has
    # closed its copy (and pid 1 is out of the job's reach: signals from inside are ignored, and
    # it is not dumpable after the uid change, so neither ptrace nor /proc/1/fd work). The parent
    # can answer at once and leave the namespace teardown (several ms) off the run's latency.
    job_pid = os.fork()
    if job_pid:
        os.close(R)
        for fd in (0, 1, 2):
            os.close(fd)  # so the job's output pipes close when the job's processes do
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                os._exit(1)
            if pid == job_pid:
                code = os.waitstatus_to_exitcode(status)
                code = code if code >= 0 else 128 - code
                send_raw(b'{"exit": %d}' % code)
                os._exit(code)

if kind == "exec":
    os.close(R)
    os.close(W)
    _default_signals()
    os.execv(job["argv"][0], job["argv"])

main = type(sys)("__main__")  # a fresh module object, without importing `types`
main.__dict__["__file__"] = os.path.abspath("main.py")
sys.modules["__main__"] = main
sys.argv = ["main.py"]
code = compile(job["code"], main.__file__, "exec")
if kind == "python":
    os.close(R)
    os.close(W)
    del job, CFG
    rc = 0
    try:
        exec(code, main.__dict__)
    except SystemExit as e:  # what `python main.py` does with it
        rc = e.code if type(e.code) is int else (0 if e.code is None else 1)
        if e.code is not None and type(e.code) is not int:
            print(e.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        rc = 1
    # The rest of an interpreter's exit, minus tearing down every module (~4 ms a run): wait
    # for non-daemon threads, run atexit handlers, flush.
    if "threading" in sys.modules:
        sys.modules["threading"]._shutdown()
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        rc = 120
    os._exit(rc & 0xFF)

# kind == "rpc": load the module, then answer calls until the parent closes the job channel.
# Each reply echoes the call's nonce, which the code below sees only once the call arrives, so
# replies written ahead of time by the untrusted code never match a call.
nonce = job["nonce"]
del job
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
exec(code, main.__dict__)
send({"loaded": nonce})
while True:
    req, _ = recv()
    if req is None:
        sys.stdout.flush()
        os._exit(0)
    try:
        fn = main.__dict__[req["fn"]]
        value = encode_value(fn(*decode_value(req["args"])))  # noqa: F821
        reply = {"id": req["id"], "value": value}
    except BaseException as e:  # the candidate's own exceptions (SystemExit included) are its answer
        reply = {"id": req["id"], "error": (type(e).__name__ + ": " + str(e))[:500]}
    send(reply)
