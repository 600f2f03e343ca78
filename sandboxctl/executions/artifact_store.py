"""Artifact bytes and long outputs live in a file store, not in the rows: Django's storage API
(`STORAGES["executions"]`), the local file system under the data folder by default, any S3-compatible store
through django-storages.

A row keeps each artifact's name, type, size and the name of its file. Listings show no contents; every
artifact has a download URL (the same account, or staff); the single-execution answer also carries
`content_b64` for artifacts up to SANDBOX_ARTIFACT_INLINE_MAX_BYTES, and RAGFlow's `/run` inlines all of
them, as RAGFlow's executor does. Files are written before the run's terminal UPDATE; when that UPDATE
loses (the run was cancelled meanwhile) they are deleted again, so no file outlives its row for long, and
the retention sweep (tasks.delete_expired_executions) deletes rows and files together. stdout or stderr
longer than OUTPUT_INLINE_CHARS is stored whole as a file; the row keeps its first characters, which is
what listings show, and `output()` reads the whole for the single-execution answer, callbacks and /run.
"""

import base64
import binascii
import logging
import os

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.urls import reverse

log = logging.getLogger(__name__)

OUTPUT_INLINE_CHARS = 4096  # stdout or stderr longer than this is kept in the store; the row keeps its start


def store() -> Storage:
    return storages["executions"]


def folder(execution) -> str:
    """Files of one run, grouped by account so an account's data is one prefix of the store."""
    return f"runs/{execution.caller_id or 'none'}/{execution.pk}"


def offload_artifacts(execution, artifacts: list[dict]) -> tuple[list[dict], int]:
    """Write each artifact's bytes to the store; returns the entries the row keeps and the bytes written.
    Files are named by position, never by the name the code chose."""
    kept, total = [], 0
    for index, artifact in enumerate(artifacts):
        try:
            content = base64.b64decode(artifact.get("content_b64", ""), validate=True)
        except (binascii.Error, ValueError):
            content = b""  # the worker re-encoded it; never expected, and never worth failing a run for
        entry = {key: value for key, value in artifact.items() if key != "content_b64"}
        try:
            entry["file"] = store().save(f"{folder(execution)}/artifact-{index}", ContentFile(content))
            total += len(content)
        except Exception:  # noqa: BLE001 - a store that fails must not lose the run's record: keep it without
            log.exception("execution %s: artifact %d not stored", execution.pk, index)
            entry["size"] = 0
        kept.append(entry)
    return kept, total


def offload_output(execution, stream: str, text: str) -> tuple[str, str, int]:
    """Output longer than OUTPUT_INLINE_CHARS goes to the store whole; the row keeps its beginning (what
    listings show). Returns (row text, file name or "", bytes written)."""
    if len(text) <= OUTPUT_INLINE_CHARS:
        return text, "", 0
    data = text.encode("utf-8", "replace")
    try:
        name = store().save(f"{folder(execution)}/{stream}.txt", ContentFile(data))
    except Exception:  # noqa: BLE001 - a store that fails must not lose the run's record: keep it in the row
        log.exception("execution %s: %s not stored", execution.pk, stream)
        return text, "", 0
    return text[:OUTPUT_INLINE_CHARS], name, len(data)


def output(execution, stream: str) -> str:
    """The whole of a run's stdout or stderr: from the store when it was long, else the row."""
    name = getattr(execution, f"{stream}_file", "")
    if not name:
        return getattr(execution, stream)
    try:
        with store().open(name, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        log.warning("output file %s is missing", name)
        return getattr(execution, stream)


def content(artifact: dict) -> bytes:
    """An artifact's bytes: from the store, or from the row for runs recorded before the store existed."""
    if "file" not in artifact:
        return base64.b64decode(artifact.get("content_b64", ""))
    try:
        with store().open(artifact["file"], "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        log.warning("artifact file %s is missing", artifact["file"])
        return b""


def described(execution, inline_up_to: int | None, request=None) -> list[dict]:
    """The artifacts as the API shows them: name, type, size and download URL, with `content_b64` for those
    no larger than `inline_up_to` bytes (None: none inline; -1: all)."""
    shown = []
    for index, artifact in enumerate(execution.artifacts or []):
        url = reverse("execution-artifact", args=[execution.pk, index])
        entry = {"name": artifact.get("name", ""), "mime_type": artifact.get("mime_type", ""),
                 "size": artifact.get("size", 0), "url": request.build_absolute_uri(url) if request else url}
        if inline_up_to is not None and (inline_up_to < 0 or entry["size"] <= inline_up_to):
            entry["content_b64"] = base64.b64encode(content(artifact)).decode()
        shown.append(entry)
    return shown


def inline_all(execution) -> list[dict]:
    """Every artifact with its bytes inline: RAGFlow's `/run` shape."""
    return [{key: entry[key] for key in ("name", "mime_type", "size", "content_b64")}
            for entry in described(execution, inline_up_to=-1)]


def inline_limit() -> int:
    return settings.SANDBOX_ARTIFACT_INLINE_MAX_BYTES


def delete_files(execution) -> None:
    """Delete a run's files (a missing one is already gone)."""
    names = [artifact["file"] for artifact in execution.artifacts or [] if "file" in artifact]
    names += [name for name in (execution.stdout_file, execution.stderr_file) if name]
    for name in names:
        try:
            store().delete(name)
        except OSError as exc:
            log.warning("execution %s: could not delete %s: %s", execution.pk, name, exc)
    try:
        os.rmdir(store().path(folder(execution)))  # the run's empty folder, on a file-system store
    except (NotImplementedError, OSError):
        pass
