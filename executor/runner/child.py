"""In-sandbox Python child (the supervisor's forked self, or run directly): waits for one job on stdin, then runs the user's code and calls main(**arguments).

The return value goes to the result pipe (fd given in argv), never to stdout, so printed text cannot
pose as a result. Started by supervisor.py before the job exists; standard library only.
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


def preload() -> None:
    # Heavy imports done before the job arrives are paid during warm-up, not on the request path.
    for name in filter(None, os.environ.get("SANDBOX_PRELOAD", "").split(",")):
        try:
            __import__(name.strip())
        except ImportError:
            pass


USER_FILE = "main.py"
user_source = ""


def print_traceback(exc: BaseException) -> None:
    """The traceback as the user's code sees it: this runner's frames left out, the code's own lines shown."""
    import linecache
    import traceback  # imported on failure only: it is slow to import under gVisor

    linecache.cache[USER_FILE] = (len(user_source), None, user_source.splitlines(True), USER_FILE)
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
        print_traceback(exc)
    except BaseException:  # noqa: BLE001 - a closed or replaced stderr, a hostile exception: the outcome still goes
        pass


def run(job: dict) -> dict:
    global user_source
    code, arguments = job["code"], job["arguments"]
    user_source = code
    try:
        tree = ast.parse(code, filename=USER_FILE)
    except SyntaxError as exc:
        report_traceback(exc)
        return failure("SyntaxError", f"{exc.msg} (line {exc.lineno})")
    has_main = defines_main(tree)
    if not has_main and arguments:
        return failure("MissingMain", "code must define main() when arguments are given")
    namespace = {"__name__": "__sandbox__" if has_main else "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(tree, USER_FILE, "exec"), namespace)
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


def main(result_fd: int) -> None:
    seed_matplotlib_cache()
    preload()
    os.write(result_fd, b"R")
    job = json.loads(sys.stdin.buffer.read())
    reseed()
    os.makedirs("artifacts", exist_ok=True)  # code may save into artifacts/ without creating it
    sys.stdin.close()
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)
    sys.stdin = open(0, closefd=False)
    # Line buffering keeps partial output when the run is killed at its deadline.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    limit = job.get("memory_limit_bytes")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    outcome = run(job)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the code closed or replaced it; what it wrote is already out
            pass
    with os.fdopen(result_fd, "w", encoding="utf-8") as channel:
        channel.write(json.dumps(outcome))  # ASCII: a lone surrogate in a message must not break the report
    os._exit(0 if outcome["ok"] else 1)


if __name__ == "__main__":
    main(int(sys.argv[1]))
