"""Submitting an execution and waiting for it: the one path behind /api/v1/executions and /run."""

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from providers import manager
from sandboxctl.executions import admission, notify
from sandboxctl.executions.dispatch import dispatch
from sandboxctl.executions.models import Execution

log = logging.getLogger(__name__)

NOTICE_RECHECK = 0.5  # a lost notification costs at most this much latency
POLL_INTERVALS = (0.002, 0.003, 0.005, 0.005, 0.01, 0.01, 0.02, 0.02, 0.05)


@dataclass(frozen=True)
class Submission:
    language: str
    code: str
    arguments: dict
    timeout: float | None = None
    memory_mb: int | None = None
    callback_url: str = ""

    def fingerprint(self) -> str:
        body = json.dumps(self.__dict__, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()


class UnsupportedLanguage(Exception):
    """The active provider does not run this language."""


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
    with transaction.atomic():
        admission.lock_account(user.pk)
        admission.check_quota(user.pk)
        try:
            with transaction.atomic():  # a savepoint: a lost key race must not spoil the outer transaction
                execution = _create(submission, provider, user, token, idempotency_key, fingerprint)
        except IntegrityError:
            # Two requests with the same key raced; the other one created the row.
            existing = Execution.objects.get(caller=user, idempotency_key=idempotency_key)
            return _replay(existing, fingerprint), False
        admitted = admission.admit(user.pk)
    for run in admitted:
        dispatch(run)
    execution.refresh_from_db()
    return execution, True


def _create(submission: Submission, provider, user, token, idempotency_key, fingerprint: str) -> Execution:
    return Execution.objects.create(
        provider=provider.name,
        language=submission.language,
        code=submission.code,
        code_sha256=hashlib.sha256(submission.code.encode()).hexdigest(),
        arguments=submission.arguments,
        requested_limits={"timeout": submission.timeout, "memory_mb": submission.memory_mb},
        limits=asdict(provider.limits_for(submission.timeout, submission.memory_mb)),
        caller=user,
        token=token,
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
        callback_url=submission.callback_url,
        queue=provider.queue_for(submission.language),
    )


def _replay(existing: Execution, fingerprint: str) -> Execution:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict("Idempotency-Key was already used with a different request")
    return existing


def wait_for(execution: Execution, timeout: float) -> Execution:
    """Block until the execution ends or `timeout` passes; returns the freshest row either way."""
    deadline = time.monotonic() + min(timeout, settings.SANDBOX_WAIT_CAP)
    if notify.uses_postgres():
        return _wait_for_notice(execution, deadline)
    attempt = 0
    while not execution.is_terminal and time.monotonic() < deadline:
        time.sleep(POLL_INTERVALS[min(attempt, len(POLL_INTERVALS) - 1)])
        attempt += 1
        _refresh_if_changed(execution)
    return execution


def _wait_for_notice(execution: Execution, deadline: float) -> Execution:
    event = notify.listener.register(execution.pk)
    try:
        _refresh_if_changed(execution)  # it may have ended before we started listening
        while not execution.is_terminal and time.monotonic() < deadline:
            if event.wait(min(NOTICE_RECHECK, max(0.0, deadline - time.monotonic()))):
                event.clear()
                execution.refresh_from_db()
            else:
                _refresh_if_changed(execution)
    finally:
        notify.listener.unregister(execution.pk, event)
    return execution


def _refresh_if_changed(execution: Execution) -> None:
    status = Execution.objects.filter(pk=execution.pk).values_list("status", flat=True).first()
    if status != execution.status:
        execution.refresh_from_db()


def wait_budget(execution: Execution) -> float:
    """How long a synchronous request waits: the run's own limit plus time to queue, start and report."""
    return execution.limits["timeout"] + settings.SANDBOX_POOL_ACQUIRE_TIMEOUT + 5.0
