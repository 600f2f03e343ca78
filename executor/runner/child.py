"""In-sandbox Python child (the supervisor's forked self, or run directly by a SaaS driver or session host):
waits for its opening on stdin, then runs cells — the user's code and its main(**arguments) — one after
another in one namespace, answering each with one MESSAGE (wire.py) on the result pipe (fd given in argv),
never on stdout, so printed text cannot pose as a result. An opening that keeps nothing (a one-shot run)
takes exactly one cell. Started before the opening exists; standard library only, and nothing imported from
the runner's other files (a SaaS driver ships this file alone).
"""

import ast
import json
import os
import resource
import sys
import types


MATPLOTLIB_SEED = "/var/cache/sandboxctl-matplotlib"  # the image's prebuilt font list (executor/images.py)


def seed_matplotlib_cache() -> None:
    """matplotlib wants a writable config folder; start it with the image's font list instead of a rescan."""
    target = os.environ.get("MPLCONFIGDIR")
    if not target or not os.path.isdir(MATPLOTLIB_SEED):
        return
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(MATPLOTLIB_SEED):
        with open(os.path.join(MATPLOTLIB_SEED, name), "rb") as source, open(os.path.join(target, name), "wb") as copy:
            copy.write(source.read())


def reseed() -> None:
    """A sandbox restored from a snapshot is a clone: every generator seeded before the snapshot would give
    every run the same numbers. Seed them again from the kernel, which a restore does not clone (a module
    first imported after the restore seeds itself)."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def shift_heap() -> None:
    # gVisor gives the brk heap little or no randomness between interpreter starts, so snapshot variants made
    # from separate starts could share the addresses of everything malloc places there. Moving the break by a
    # random number of pages, and the next allocation by a random number of bytes, before the heavy imports
    # gives each variant its own heap layout; the pages skipped are never touched, so cost no memory.
    import ctypes
    libc = ctypes.CDLL(None)
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk(ctypes.c_long(int.from_bytes(os.urandom(2), "little") % 4096 * 4096 + 4096))
    libc.malloc.restype = ctypes.c_void_p
    keep_allocated.append(libc.malloc(ctypes.c_size_t(int.from_bytes(os.urandom(2), "little") % 4096 + 16)))


keep_allocated: list[int] = []


def preload() -> None:
    # Heavy imports done before the job arrives are paid during warm-up, not on the request path.
    names = list(filter(None, os.environ.get("SANDBOX_PRELOAD", "").split(",")))
    if names:
        shift_heap()
    for name in names:
        try:
            __import__(name.strip())
        except ImportError:
            pass


USER_FILE = "main.py"
sources: dict[str, str] = {}  # the code of each file name tracebacks show (one per cell in a session)
egress_env: dict[str, str] = {}  # what open_egress put in the environment (a session's later cell may have none)


def open_egress(egress: dict | None) -> None:
    """A run with an allowlist: every client's proxy settings point at the sandbox's relay (the proxy decides
    each connection), and what pip installs for the user (HOME is /tmp) is importable at once. A session's
    cell without one loses the settings an earlier cell had."""
    for name, value in egress_env.items():
        if os.environ.get(name) == value:
            del os.environ[name]
    egress_env.clear()
    opener = sys.modules.get("urllib.request")
    if opener is not None:
        opener.install_opener(None)  # an earlier cell's urlopen read the proxy settings of its time
    if not egress:
        return
    egress_env.update(egress["env"])
    os.environ.update(egress_env)
    import site

    user_site = site.getusersitepackages()
    os.makedirs(user_site, exist_ok=True)
    if user_site not in sys.path:
        sys.path.append(user_site)


def print_traceback(exc: BaseException) -> None:
    """The traceback as the user's code sees it: this runner's frames left out, the code's own lines shown."""
    import linecache
    import traceback  # imported on failure only: it is slow to import under gVisor

    for name, source in sources.items():
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    frames = None if isinstance(exc, SyntaxError) else exc.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename == __file__:
        frames = frames.tb_next
    traceback.print_exception(type(exc), exc, frames)


def defines_main(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main":
            return True
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "main" for t in node.targets):
            return True
        if isinstance(node, ast.ImportFrom | ast.Import) and any(
            (alias.asname or alias.name) == "main" for alias in node.names
        ):
            return True
    return False


def to_json(value: object) -> str:
    def convert(obj: object) -> object:
        # numpy scalars and arrays are what analysis code usually returns; hand back plain JSON for them.
        for method in ("tolist", "item"):
            if callable(getattr(obj, method, None)):
                return getattr(obj, method)()
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    return json.dumps(value, default=convert, allow_nan=False, ensure_ascii=False)


def failure(kind: str, message: str) -> dict:
    return {"ok": False, "error": {"type": kind, "message": message}}


def describe(exc: BaseException) -> str:
    """The exception's message; user code may define a __str__ that raises, which must not end the report."""
    try:
        return str(exc)[:2000]
    except BaseException:  # noqa: BLE001 - anything the user's __str__ raises
        return f"<the message of this {type(exc).__name__} could not be read: its __str__ raised>"


def describe_value(value: object) -> str:
    try:
        return repr(value)[:200]
    except BaseException:  # noqa: BLE001 - a __repr__ that raises
        return f"<a {type(value).__name__}>"


def report_traceback(exc: BaseException) -> None:
    try:
        sys.stdout.flush()  # what was printed before the failure comes before its traceback
    except BaseException:  # noqa: BLE001 - the code closed or replaced stdout
        pass
    try:
        print_traceback(exc)
    except BaseException:  # noqa: BLE001 - a closed or replaced stderr, a hostile exception: the outcome still goes
        pass


def run(job: dict, namespace: dict | None = None, filename: str = USER_FILE) -> dict:
    """Run the code and its main(); in a session `namespace` is the one every cell shares."""
    code, arguments = job["code"], job["arguments"]
    sources[filename] = code
    if job.get("egress") or egress_env:
        open_egress(job.get("egress"))
    try:
        tree = ast.parse(code, filename=filename)
    except SyntaxError as exc:
        report_traceback(exc)
        return failure("SyntaxError", f"{exc.msg} (line {exc.lineno})")
    has_main = defines_main(tree)
    if not has_main and arguments:
        return failure("MissingMain", "code must define main() when arguments are given")
    if namespace is None:
        namespace = {"__builtins__": __builtins__}
    # `if __name__ == "__main__": main()` must not call main a second time where we call it.
    namespace["__name__"] = "__sandbox__" if has_main else "__main__"
    try:
        exec(compile(tree, filename, "exec"), namespace)
        if not has_main:
            return {"ok": True, "script": True}
        main = namespace.get("main")
        if not callable(main):
            return failure("MainNotCallable", "main is defined but is not callable")
        value = main(**arguments)
        if isinstance(value, types.CoroutineType):
            import asyncio  # 150 ms to import under gVisor: only async mains pay for it

            value = asyncio.run(value)
    except MemoryError as exc:
        report_traceback(exc)
        return failure("MemoryError", "the code ran out of memory")
    except SystemExit as exc:
        return failure("SystemExit", f"the code called exit({describe_value(exc.code)})")
    except BaseException as exc:  # noqa: BLE001 - any user failure is reported, never raised
        report_traceback(exc)
        return failure(type(exc).__name__, describe(exc))
    try:
        return {"ok": True, "value_json": to_json(value)}
    except BaseException as exc:  # noqa: BLE001 - a hostile tolist(), a cycle, too deep a nesting
        return failure("ResultNotSerializable", f"main() returned a value that is not JSON: {describe(exc)}")


def read_message(fd: int) -> dict | None:
    """One MESSAGE (a 4-byte length, then JSON) from `fd`; None at its end."""
    header = read_exact(fd, 4)
    if header is None:
        return None
    body = read_exact(fd, int.from_bytes(header, "big"))
    return None if body is None else json.loads(body)


def read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def start_running(opening: dict) -> None:
    """What the opening does, before any of the user's code: a closed stdin, fresh random state, the artifacts
    folder, the memory cap."""
    reseed()
    os.makedirs("artifacts", exist_ok=True)  # code may save into artifacts/ without creating it
    sys.stdin.close()
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)
    sys.stdin = open(0, closefd=False)
    limit = opening.get("memory_limit_bytes")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


OUTPUT_BUFFER = 64 * 1024
OUR_STREAMS: list = []  # the buffered stdout and stderr, flushed even when the code replaced sys.stdout
OPENED = None  # a threading.Event (buffer_output), set once the opening came: the flusher's timer runs from then
FLUSH_EVERY = 0.05  # written output reaches the supervisor (and a live viewer) at least this often


def buffer_output() -> None:
    """stdout and stderr buffered in 64 KiB blocks, flushed every FLUSH_EVERY, when a block fills, before a
    traceback, before a fork, and when the cell answers. A print is a write to memory, not a system call — each
    of those costs ~0.1 ms under gVisor's ptrace platform, so 100,000 printed lines took seconds line-buffered.
    Started while the interpreter warms up, so a run pays nothing for it; a kill loses at most FLUSH_EVERY of
    output."""
    import io
    import threading

    streams = []
    for fd, name in ((1, "stdout"), (2, "stderr")):
        raw = io.FileIO(fd, "w", closefd=False)
        stream = io.TextIOWrapper(io.BufferedWriter(raw, OUTPUT_BUFFER), encoding="utf-8",
                                  errors="backslashreplace" if name == "stderr" else "strict")
        setattr(sys, name, stream)
        streams.append(stream)
    OUR_STREAMS.extend(streams)
    os.register_at_fork(before=flush_output)  # a forked process must not write the parent's buffer again
    global OPENED
    OPENED = threading.Event()
    threading.Thread(target=flush_periodically, args=(tuple(streams),), name="output-flusher", daemon=True).start()


def flush_periodically(streams: tuple) -> None:
    import time

    while True:
        # Asleep without waking until the opening came: a warm sandbox waits in the pool for seconds, and
        # every wake-up is several system calls, each dear under gVisor's ptrace platform. From then on it
        # ticks, between a session's cells too, so what a thread writes while no cell runs reaches the pipe
        # while no cell runs and is dropped there (relay.discard_waiting_bytes), never sent as a later cell's.
        OPENED.wait()
        time.sleep(FLUSH_EVERY)
        for stream in streams:
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - closed by the code, or a write racing ours: next tick
                pass


def flush_output() -> None:
    for stream in (*OUR_STREAMS, sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the code closed or replaced it; what it wrote is already out
            pass


def answer(result_fd: int, outcome: dict) -> None:
    # ASCII JSON: a lone surrogate in a message must not break the report.
    body = json.dumps(outcome).encode()
    os.write(result_fd, len(body).to_bytes(4, "big") + body)


def serve(result_fd: int, requests: int, keep: bool) -> None:
    """Cells until the supervisor closes the requests (or, keeping nothing, after the one cell): one namespace,
    one answer per cell, in order."""
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    number = 0
    while True:
        try:
            request = read_message(requests)
            if request is None:
                os._exit(0)
            number += 1
            outcome = run(request, namespace, f"cell{number}.py" if keep else USER_FILE)
            flush_output()
            answer(result_fd, {**outcome, "nonce": request.get("nonce")})
            if not keep:
                os._exit(0 if outcome["ok"] else 1)
        except KeyboardInterrupt:
            # The interrupt for a cell past its timeout came after the cell was done: it has answered already.
            continue


def main(result_fd: int) -> None:
    seed_matplotlib_cache()
    preload()
    buffer_output()
    os.write(result_fd, b"R")
    opening = read_message(0)
    if opening is None:
        os._exit(1)
    OPENED.set()
    requests = os.dup(0)  # not inherited by anything the code starts (Python's descriptors are not)
    start_running(opening)
    serve(result_fd, requests, opening.get("keep", True) is not False)


if __name__ == "__main__":
    main(int(sys.argv[1]))
