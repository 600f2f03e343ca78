"""What an artifact may be: one home for the rules, enforced twice.

The supervisor applies them inside the sandbox so it never reads a file it would refuse; the worker
applies them again to whatever arrives, because it trusts nothing the sandbox sends. Standard library
only: this file runs inside the sandbox image and is imported by the worker as `executor.runner.rules`.
"""

import os
import unicodedata

ARTIFACT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".pdf": "application/pdf",
    ".csv": "text/csv",
    ".json": "application/json",
    ".txt": "text/plain",
    ".html": "text/html",
}
# Binary formats must start the way their extension says, so a name cannot pass one file off as another.
MAGIC = {".png": (b"\x89PNG\r\n\x1a\n",), ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",), ".pdf": (b"%PDF-",)}
NAME_MAX = 128
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
# Windows opens these device names whatever the extension (`CON.txt` is the console): a file saved under one
# by whoever downloads the artifact goes to a device, not to disk.
WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)),
                             *(f"LPT{n}" for n in range(1, 10))})


def extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an artifact's name, or None when it can."""
    if not name:
        return "empty name"
    if any(0xDC80 <= ord(char) <= 0xDCFF for char in name) or any(0xD800 <= ord(char) <= 0xDFFF for char in name):
        return "name is not valid UTF-8"
    if len(name) > NAME_MAX:
        return f"name longer than {NAME_MAX} characters"
    if "/" in name or "\\" in name:
        return "name must be a single path component"
    if name[0] in ". ":
        return "name must not start with a dot or a space"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "name contains control characters"
    if any(char in BIDI_CONTROLS for char in name):
        return "name contains bidirectional text controls"
    # Zero-width, byte-order marks, line/paragraph separators and odd spaces make two names look alike.
    if any(unicodedata.category(char) == "Cf" for char in name):
        return "name contains invisible format characters"
    if any(unicodedata.category(char) in ("Zl", "Zp") for char in name):
        return "name contains line or paragraph separators"
    if any(unicodedata.category(char) == "Zs" and char != " " for char in name):
        return "name contains spaces other than the plain space"
    if name.split(".", 1)[0].rstrip(" ").upper() in WINDOWS_DEVICES:
        return "name is a Windows device name"
    if extension(name) not in ARTIFACT_TYPES:
        return f"file type {extension(name) or '(none)'} is not allowed"
    return None


def content_problem(name: str, content: bytes) -> str | None:
    """Why these bytes cannot be the file its name says it is, or None."""
    signatures = MAGIC.get(extension(name))
    if signatures and not content.startswith(signatures):
        return f"content is not a {extension(name)[1:].upper()} file"
    return None


# Paths of a session's files (and of a run's input files): relative to the working folder, at most this deep
# and long, each component a plain name. Checked by the API (400 naming the path) and again in the sandbox,
# where every component is also opened without following links.
PATH_MAX = 1024
PATH_DEPTH_MAX = 16
COMPONENT_MAX = 255


def path_problem(path: str) -> str | None:
    """Why `path` cannot name a file in the working folder, or None when it can."""
    if not isinstance(path, str) or not path:
        return "the path is empty"
    if len(path.encode("utf-8", "surrogatepass")) > PATH_MAX:
        return f"the path is longer than {PATH_MAX} bytes"
    # Only "/" separates folders: a backslash or a colon is an ordinary character in a Linux file name, so a
    # file the code named "a\\b" or "C:x" can be listed, read and deleted like any other.
    if path.startswith("/"):
        return "the path must be relative to the working folder, not absolute"
    components = path.split("/")
    if len(components) > PATH_DEPTH_MAX:
        return f"the path is more than {PATH_DEPTH_MAX} folders deep"
    for component in components:
        if component in ("", ".", ".."):
            return "the path must not contain '..', '.' or empty components (it would leave or blur the folder)"
        if len(component.encode("utf-8", "surrogatepass")) > COMPONENT_MAX:
            return f"a path component is longer than {COMPONENT_MAX} bytes"
        if any(0xD800 <= ord(char) <= 0xDFFF for char in component):
            return "the path is not valid UTF-8"
        if any(unicodedata.category(char) == "Cc" for char in component):
            return "the path contains control characters"
    return None
