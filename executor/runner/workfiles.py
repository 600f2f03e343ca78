"""The file keeper: the sandbox's process that reads and writes files in the working folder for the host.

The supervisor forks it before any job exists, as it forks the language child: it becomes nobody (65534)
under the same syscall filter, so it can reach exactly what the user's code can reach and nothing of the
supervisor's. It answers requests (MESSAGEs, wire.py) on stdin/stdout: put, get, list and delete. A one-shot
run's input files are written through it before the code starts; a session keeps it for its whole life.

Every path is checked by the rules the API applies (rules.path_problem) and then walked one component at a
time from the working folder's descriptor with O_NOFOLLOW: a link the code planted is refused, never
followed. Standard library only: this file runs inside the sandbox image.
"""

import base64
import binascii
import errno
import json
import os
import secrets
import stat

from rules import path_problem
from wire import MESSAGE, pack_message

WORK_DIR = "/work"
LIST_MAX = 10_000  # entries a listing walks before it stops (and says so)
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    """A request that cannot be done, with a code the host maps to an HTTP status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def open_folder(name: str, parent: int, create: bool) -> int:
    """The descriptor of folder `name` in `parent`, never through a link; made when `create` and missing."""
    try:
        seen = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        if not create:
            raise Refused("not_found", "no such file") from None
        os.mkdir(name, 0o755, dir_fd=parent)
        seen = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if stat.S_ISLNK(seen.st_mode):
        raise Refused("link", "the path goes through a symbolic link")
    if not stat.S_ISDIR(seen.st_mode):
        raise Refused("not_a_folder", "a component of the path is a file, not a folder")
    folder = os.open(name, OPEN_DIR, dir_fd=parent)
    info = os.fstat(folder)
    if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(folder)
        raise Refused("link", "the path changed while it was opened")
    return folder


def parent_of(path: str, create: bool = False) -> tuple[int, str]:
    """(descriptor of the folder that holds `path`, its last component); the caller closes the descriptor."""
    problem = path_problem(path)
    if problem:
        raise Refused("bad_path", problem)
    *folders, name = path.split("/")
    current = os.open(WORK_DIR, OPEN_DIR)
    try:
        for folder in folders:
            following = open_folder(folder, current, create)
            os.close(current)
            current = following
    except BaseException:
        os.close(current)
        raise
    return current, name


def regular_file(folder: int, name: str) -> os.stat_result:
    try:
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        raise Refused("not_found", "no such file") from None
    if stat.S_ISLNK(info.st_mode):
        raise Refused("link", "the path is a symbolic link")
    if stat.S_ISDIR(info.st_mode):
        raise Refused("is_a_folder", "the path is a folder")
    if not stat.S_ISREG(info.st_mode):
        raise Refused("not_a_file", "the path is not a regular file")
    return info


def put(request: dict) -> dict:
    try:
        content = base64.b64decode(request["content_b64"], validate=True)
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise Refused("bad_request", "the content is not base64") from None
    max_total = request.get("max_total_bytes")
    folder, name = parent_of(request["path"], create=True)
    try:
        replaced = 0
        try:
            replaced = regular_file(folder, name).st_size
        except Refused as exc:
            if exc.code != "not_found":
                raise
        if max_total is not None:
            used = sum(entry["size"] for entry in walk()[0]) - replaced
            if used + len(content) > max_total:
                raise Refused("too_large", f"the session's files would take {used + len(content)} bytes; "
                                           f"the limit is {max_total}")
        # Written beside it, then renamed over it: a reader never sees half a file, a link is replaced, not followed.
        partial = f".upload-{secrets.token_hex(8)}"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=folder)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(partial, name, src_dir_fd=folder, dst_dir_fd=folder)
        return {"path": request["path"], "size": len(content)}
    finally:
        os.close(folder)


def get(request: dict) -> dict:
    folder, name = parent_of(request["path"])
    try:
        info = regular_file(folder, name)
        limit = request.get("max_bytes")
        if limit is not None and info.st_size > limit:
            raise Refused("too_large", f"the file is {info.st_size} bytes; the limit is {limit}")
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        try:
            chunks, remaining = [], info.st_size
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        content = b"".join(chunks)
        return {"path": request["path"], "size": len(content), "content_b64": base64.b64encode(content).decode()}
    finally:
        os.close(folder)


def walk() -> tuple[list[dict], bool]:
    """Every regular file under the working folder (links not followed), and whether the walk stopped early."""
    entries: list[dict] = []
    pending = [("", os.open(WORK_DIR, OPEN_DIR))]
    truncated = False
    while pending:
        prefix, folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    if len(entries) >= LIST_MAX:
                        truncated = True
                        break
                    path = f"{prefix}{entry.name}"
                    if entry.is_dir(follow_symlinks=False):
                        try:
                            pending.append((f"{path}/", os.open(entry.name, OPEN_DIR, dir_fd=folder)))
                        except OSError:
                            pass
                    elif entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        entries.append({"path": path, "size": info.st_size, "modified": info.st_mtime})
        finally:
            os.close(folder)
    for _, folder in pending:
        os.close(folder)
    return sorted(entries, key=lambda entry: entry["path"]), truncated


PAGE_MAX = 1000  # entries in one answer: a listing is answered a page at a time, never whole


def listing(request: dict) -> dict:
    """One page of the files in path order, after the path `after`; `next` is the next page's `after`."""
    entries, truncated = walk()
    after = request.get("after") or ""
    limit = min(int(request.get("limit") or PAGE_MAX), PAGE_MAX)
    following = [entry for entry in entries if entry["path"] > after]
    page = following[:limit]
    more = len(following) > limit
    return {"files": page, "truncated": truncated, "next": page[-1]["path"] if more else None}


def delete(request: dict) -> dict:
    folder, name = parent_of(request["path"])
    try:
        regular_file(folder, name)
        os.unlink(name, dir_fd=folder)
        return {"path": request["path"]}
    finally:
        os.close(folder)


OPERATIONS = {"put": put, "get": get, "list": listing, "delete": delete}


def answer(request: dict) -> dict:
    operation = OPERATIONS.get(request.get("op"))
    if operation is None:
        return {"ok": False, "code": "bad_request", "message": "unknown operation"}
    try:
        return {"ok": True, **operation(request)}
    except Refused as exc:
        return {"ok": False, "code": exc.code, "message": str(exc)}
    except OSError as exc:
        code = "no_space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
        return {"ok": False, "code": code, "message": exc.strerror or str(exc)}


def read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(requests: int = 0, answers: int = 1) -> None:
    """Answer requests until the supervisor closes the pipe."""
    while True:
        header = read_exact(requests, MESSAGE.size)
        if header is None:
            return
        body = read_exact(requests, MESSAGE.unpack(header)[0])
        if body is None:
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = {}
        data = pack_message(json.dumps(answer(request if isinstance(request, dict) else {})).encode())
        view = memoryview(data)
        while view:
            view = view[os.write(answers, view):]
