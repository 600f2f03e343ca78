"""Submitting an execution and waiting for it: the one path behind /api/v1/executions and /run."""

import asyncio
import hashlib
import json
import logging
import threading
from dataclasses import asdict, dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from providers import manager
from providers.base import Limits, RequestedLimits
from sandboxctl.egress import policy as egress_policy
from sandboxctl.executions import admission, notify
from sandboxctl.executions.dispatch import dispatch
from sandboxctl.executions.models import Execution, request_bytes

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Submission:
    language: str
    code: str
    arguments: dict
    limits: RequestedLimits = RequestedLimits()
    callback_url: str = ""
    files: tuple = ()  # input files ({path, content_b64}), written into the working folder first
    network: tuple = ()  # the egress allowlist asked for (`network.allow`); nothing asked: no network

    def fingerprint(self) -> str:
        fields = asdict(self)
        # Limits not asked for, and no files or network, leave no trace: adding one does not change old fingerprints.
        fields.update({name: value for name, value in fields.pop("limits").items() if value is not None})
        for name in ("files", "network"):
            if not fields[name]:
                del fields[name]
        body = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()


class UnsupportedLanguage(Exception):
    """The active provider does not run this language."""


class FilesUnsupported(Exception):
    """The active provider cannot put input files into its sandboxes."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""


def submit(
    submission: Submission, user, token, idempotency_key: str | None, provider_name: str | None = None
) -> tuple[Execution, bool]:
    """Record the execution and queue it, within the account's quota and fair share (admission.py).

    Returns (execution, created); a replayed Idempotency-Key returns the original. Raises
    admission.TooManyQueued when the account has too many runs queued already.
    """
    fingerprint = submission.fingerprint()
    if idempotency_key:
        existing = Execution.objects.filter(caller=user, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay(existing, fingerprint), False
    provider = manager.provider(provider_name) if provider_name else manager.active_provider()
    if submission.language not in provider.get_supported_languages():
        raise UnsupportedLanguage(f"{provider.label} does not run {submission.language}")
    if submission.files and not provider.takes_files:
        raise FilesUnsupported(f"the active provider, {provider.label} ({provider.name}), takes no input files")
    limits = egress_policy.with_allowlist(provider, provider.clamp(submission.limits), user, submission.network)
    with transaction.atomic():
        admission.lock_account(user.pk)
        admission.check_quota(user.pk, request_bytes(submission.code, submission.arguments, submission.files))
        try:
            with transaction.atomic():  # a savepoint: a lost key race must not spoil the outer transaction
                execution = _create(submission, provider, limits, user, token, idempotency_key, fingerprint)
        except IntegrityError:
            # Two requests with the same key raced; the other one created the row.
            existing = Execution.objects.get(caller=user, idempotency_key=idempotency_key)
            return _replay(existing, fingerprint), False
        admitted = admission.admit(user.pk)
    for run in admitted:
        dispatch(run)
    execution.refresh_from_db()
    return execution, True


def _create(submission: Submission, provider, limits: Limits, user, token, idempotency_key, fingerprint: str
            ) -> Execution:
    return Execution.objects.create(
        provider=provider.name,
        language=submission.language,
        code=submission.code,
        code_sha256=hashlib.sha256(submission.code.encode()).hexdigest(),
        arguments=submission.arguments,
        requested_limits={**asdict(submission.limits),
                          **({"network": {"allow": list(submission.network)}} if submission.network else {})},
        limits=asdict(limits),
        caller=user,
        token=token,
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
        callback_url=submission.callback_url,
        queue=provider.queue_for(submission.language),
        input_files=list(submission.files),
        stored_bytes=request_bytes(submission.code, submission.arguments, submission.files),
    )


def _replay(existing: Execution, fingerprint: str) -> Execution:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict("Idempotency-Key was already used with a different request")
    return existing


def wait_for(execution: Execution, timeout: float) -> Execution:
    """Block this thread until the execution ends or `timeout` passes; returns the freshest row either way.
    For callers outside a request (the console's probe); requests wait with `await_end`, holding no thread."""
    ended = threading.Event()
    ticket = notify.waiters.register(execution.pk, ended.set)
    try:
        ended.wait(min(timeout, settings.SANDBOX_WAIT_CAP))
    finally:
        notify.waiters.unregister(execution.pk, ticket)
    execution.refresh_from_db()
    return execution


async def await_end(execution_id, timeout: float) -> bool:
    """Wait as a coroutine until the execution ends or `timeout` passes; True if it ended.

    Costs no thread and no query of its own: the process's listener and watcher (notify.py) wake it."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def wake() -> None:  # called from the listener's or the watcher's thread
        try:
            loop.call_soon_threadsafe(ended.set)
        except RuntimeError:  # the loop is closed: the request has gone
            pass

    ticket = notify.waiters.register(execution_id, wake)
    try:
        await asyncio.wait_for(ended.wait(), timeout)
        return True
    except TimeoutError:
        return False
    finally:
        notify.waiters.unregister(execution_id, ticket)


def wait_budget(execution: Execution) -> float:
    """How long a `wait=true` request waits: past its provider's own deadline (executor/deadlines.py), so a
    run that ends is always answered, unless an operator caps it lower (SANDBOX_WAIT_CAP)."""
    budget = manager.provider(execution.provider).budget(Limits(**execution.limits), cell=bool(execution.session_id))
    return min(budget.wait, settings.SANDBOX_WAIT_CAP)
