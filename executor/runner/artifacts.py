"""The run's artifacts: the files saved in /work/artifacts, read by the supervisor (root of the sandbox) without
ever following a path the user controls. Standard library only (inside the sandbox)."""

import errno
import os
import stat

from rules import ARTIFACT_TYPES, extension, name_problem

WORK_DIR = "/work"
NOBODY = 65534
# Enumeration stops here, before any report is built: a flood of files (45,000 empty ones) ends the run
# `too_many_artifacts` instead of a report too large for the protocol.
MAX_ENTRIES = 1000
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class TooManyArtifacts(Exception):
    pass


def open_artifact_dir(rejected: list[dict]) -> int | None:
    """A descriptor of /work/artifacts opened without following links, or None when there is none to read.

    The supervisor is root of the sandbox: a path it follows as root could lead anywhere the user planted a
    link (`/root`, `/proc/1/fd`). So every step is relative to a descriptor with O_NOFOLLOW, and the folder
    must be a real directory owned by the child (uid 65534) — never something root made, or a link to it."""
    work = os.open(WORK_DIR, OPEN_DIR)
    try:
        # Judged by lstat first and then by identity: on runsc 0.0~20240729 an open with O_NOFOLLOW and
        # O_DIRECTORY was seen to follow a link to /root, so O_NOFOLLOW alone is not relied on.
        seen = os.stat("artifacts", dir_fd=work, follow_symlinks=False)
        if not stat.S_ISDIR(seen.st_mode):
            rejected.append({"name": "artifacts", "reason": "the artifacts folder is not a real folder"})
            return None
        folder = os.open("artifacts", OPEN_DIR, dir_fd=work)
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP / ENOTDIR: a link or a file where the folder should be
        rejected.append({"name": "artifacts", "reason": "the artifacts folder is not a real folder"})
        return None
    finally:
        os.close(work)
    info = os.fstat(folder)
    if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino) or not stat.S_ISDIR(info.st_mode):
        os.close(folder)
        rejected.append({"name": "artifacts", "reason": "the artifacts folder changed while it was opened"})
        return None
    if info.st_uid != NOBODY:
        os.close(folder)
        rejected.append({"name": "artifacts", "reason": "the artifacts folder is not owned by the run"})
        return None
    return folder


def artifact_names(folder: int) -> list[str]:
    """The entries of the artifacts folder (one level), sorted; TooManyArtifacts past MAX_ENTRIES."""
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            names.append(entry.name)
            if len(names) > MAX_ENTRIES:
                raise TooManyArtifacts
    return sorted(names)


def collect_artifacts(limits: dict, since: float | None = None) -> tuple[list[dict], list[dict], str | None]:
    """Read the files of /work/artifacts (one level, nothing promoted from /work) without following links;
    report every file refused with its reason. Returns (accepted, rejected, error code or None). A session's
    cell passes `since` (when it started): only files written since then are its artifacts.

    Runs after every user process is dead; and every open is relative to the folder's descriptor with
    O_NOFOLLOW, so even a swap between the check and the read could only swap in what the run owns."""
    accepted: list[dict] = []
    rejected: list[dict] = []
    folder = open_artifact_dir(rejected)
    if folder is None:
        return accepted, rejected, None
    try:
        try:
            names = artifact_names(folder)
        except TooManyArtifacts:
            return [], [], "too_many_artifacts"
        total = 0
        for name in names:
            if since is not None and not changed_since(folder, name, since):
                continue
            reason, content = read_artifact(folder, name, limits, len(accepted), total)
            if reason == "empty":
                continue  # an empty file is no artifact (RAGFlow's executor skips them too)
            if reason:
                rejected.append({"name": name, "reason": reason})
                continue
            total += len(content)
            accepted.append({"name": name, "mime_type": ARTIFACT_TYPES[extension(name)], "size": len(content),
                             "content_b64": b64encode(content).decode("ascii")})
    finally:
        os.close(folder)
    return accepted, rejected, None


def changed_since(folder: int, name: str, since: float) -> bool:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False).st_mtime >= since
    except OSError:
        return True  # read_artifact says why it cannot be read


def b64encode(data: bytes) -> bytes:
    import base64  # only runs that leave artifacts pay for it

    return base64.b64encode(data)


def read_artifact(folder: int, name: str, limits: dict, count: int, total: int) -> tuple[str | None, bytes]:
    try:
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError as exc:
        return f"cannot open: {exc.strerror}", b""
    if stat.S_ISLNK(info.st_mode):
        return "symbolic links are not followed", b""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file", b""
    problem = name_problem(name)
    if problem:
        return problem, b""
    if info.st_size == 0:
        return "empty", b""
    if count >= limits["max_count"]:
        return f"more than {limits['max_count']} artifacts", b""
    try:
        fd = os.open(name, OPEN_FILE, dir_fd=folder)
    except OSError as exc:
        return ("symbolic links are not followed" if exc.errno == errno.ELOOP else f"cannot open: {exc.strerror}"), b""
    try:
        seen, info = info, os.fstat(fd)
        if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
            return "the file changed while it was opened", b""
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file", b""
        if info.st_nlink > 1:
            return "hard links are not accepted", b""
        if info.st_uid != NOBODY:
            return "not a file the run made", b""
        if info.st_size > limits["max_bytes"]:
            return f"larger than {limits['max_bytes']} bytes", b""
        if total + info.st_size > limits["max_total_bytes"]:
            return f"artifacts together exceed {limits['max_total_bytes']} bytes", b""
        return None, read_bounded(fd, info.st_size)
    finally:
        os.close(fd)


def read_bounded(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
