"""Session files on their way through the file store: an upload on its way into the session's sandbox, a download
on its way back to the caller. The web and the worker that holds the sandbox may be different hosts, so the
bytes pass through the store the artifacts use (artifact_store.store()), never whole through a row or the broker.

A transfer lives only as long as its request: an upload is deleted once the worker has written it into the
sandbox (or refused it); a download once it has been sent, or once its caller is gone — the response's
`close()` deletes it even when its first byte was never sent, and a caller that stops waiting (a disconnect, a
timeout) abandons its request, so the worker deletes what it fetches for nobody. The reconciler sweeps what a
crash left within minutes (worker/sessions.py). Bytes in flight count against the account's storage quota
(admission.check_storage), so holding downloads open cannot pile up storage outside it.
"""

import logging

from django.core.files import File

from sandboxctl.executions.artifact_store import store

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def upload_name(account_id, session_id) -> str:
    return f"transfers/{account_id or 'none'}/{session_id}/put"


def download_name(account_id, session_id, request_id) -> str:
    return f"transfers/{account_id or 'none'}/{session_id}/get-{request_id}"


def save(name: str, content: File) -> str:
    """Keep `content` under (about) `name`; returns the name the store chose."""
    return store().save(name, content)


def read(name: str) -> bytes:
    with store().open(name, "rb") as upload:
        return upload.read()


def discard(name: str) -> None:
    if not name:
        return
    try:
        store().delete(name)
    except Exception:  # noqa: BLE001 - the reconciler's sweep takes what is left
        log.warning("could not delete %s from the file store", name)


class Download:
    """A download's bytes as a response body: read from the store in chunks, deleted from it on `close()`,
    which Django calls at the end of the response however it ends — sent, failed, or never started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._file = None

    def __iter__(self):
        self._file = store().open(self.name, "rb")
        while chunk := self._file.read(CHUNK):
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        discard(self.name)
