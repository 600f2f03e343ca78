import hashlib
import json
import secrets
import uuid

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, models, transaction
from django.utils import timezone

from executor.verify import storable
from providers.base import ExecutionResult, Status
from sandboxctl.egress import policy as egress_policy
from sandboxctl.executions import artifact_store, notify
from sandboxctl.executions.signals import execution_ended

TERMINAL = [status.value for status in Status if status.is_terminal]
# The callback outbox's states in which a delivery is still due or under way (worker/callbacks.py).
CALLBACK_OWED = ("pending", "retrying", "sending")


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return f"sbx_{secrets.token_urlsafe(32)}"



def json_bytes(value) -> int:
    """The size of a JSON value as it is stored (0 for none)."""
    return 0 if value is None else len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def request_bytes(code: str, arguments, input_files=None) -> int:
    """What a run's request keeps in its row until retention deletes it: counted toward the storage quota."""
    return len(code.encode("utf-8", "surrogatepass")) + json_bytes(arguments) + json_bytes(input_files or None)


class ApiToken(models.Model):
    """An API key. Only its SHA-256 is stored; the key itself is shown once, when it is made."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="default")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user, name: str = "default", key: str | None = None) -> tuple["ApiToken", str]:
        key = key or new_key()
        token = cls.objects.create(user=user, name=name, key_hash=hash_token(key), prefix=key[:8])
        return token, key


NOTHING_RETURNED = {"present": False, "value": None}


class Execution(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=64, db_index=True)
    language = models.CharField(max_length=16, db_index=True)
    code = models.TextField()
    code_sha256 = models.CharField(max_length=64, db_index=True)
    arguments = models.JSONField(default=dict)
    requested_limits = models.JSONField(default=dict)
    limits = models.JSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=[(s.value, s.value) for s in Status], default=Status.QUEUED, db_index=True
    )
    stdout = models.TextField(blank=True, default="")
    stderr = models.TextField(blank=True, default="")
    stdout_truncated = models.BooleanField(default=False)
    stderr_truncated = models.BooleanField(default=False)
    exit_code = models.IntegerField(null=True, blank=True)
    result_present = models.BooleanField(default=False)
    result = models.JSONField(null=True, blank=True)
    artifacts = models.JSONField(default=list, blank=True)
    rejected_artifacts = models.JSONField(default=list, blank=True)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    execution_time = models.FloatField(null=True, blank=True)
    queue_wait = models.DurationField(null=True, blank=True)
    memory_used_kb = models.IntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True, default="")  # the worker instance that claimed it
    queue = models.CharField(max_length=64, blank=True, default="")
    dispatched_at = models.DateTimeField(null=True, blank=True)
    sandbox_id = models.CharField(max_length=128, blank=True, default="")
    # False while a remote (SaaS) sandbox of this run may still exist; the reconciler deletes it.
    sandbox_released = models.BooleanField(default=True, db_index=True)
    # Bytes this run keeps, counted against the account's storage quota: its code, arguments and input files
    # from the start (request_bytes), then its result, output and artifacts (in the file store: artifact_store.py).
    stored_bytes = models.BigIntegerField(default=0)
    # Where a long stdout or stderr is kept whole (artifact_store.py); the text fields then hold its beginning.
    stdout_file = models.CharField(max_length=255, blank=True, default="")
    stderr_file = models.CharField(max_length=255, blank=True, default="")
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    caller = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    # NULL, not "", for "no key": the per-caller unique constraint must ignore runs without one.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    callback_url = models.URLField(max_length=2000, blank=True, default="")
    # An outbox: the terminal transition sets "pending" in the same UPDATE, so a callback is owed exactly once
    # whoever ends the run; `callback_due_at` is when the next delivery attempt is due (or a lease runs out).
    callback_status = models.CharField(max_length=16, blank=True, default="")
    callback_attempts = models.PositiveSmallIntegerField(default=0)
    callback_error = models.TextField(blank=True, default="")
    callback_due_at = models.DateTimeField(null=True, blank=True)
    # A cell of a session (sessions.py) runs in the session's sandbox, on the session's worker.
    session = models.ForeignKey("Session", null=True, blank=True, on_delete=models.SET_NULL, related_name="cells")
    # A one-shot run's input files as sent ({path, content_b64}), written into its working folder first.
    input_files = models.JSONField(default=list, blank=True)
    # Its connections through the egress proxy: [{host, port, allowed, reason, bytes_out, bytes_in}].
    egress = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["caller", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="unique_idempotency_key_per_caller",
            )
        ]

    def __str__(self) -> str:
        return f"{self.language} {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return Status(self.status).is_terminal

    def returned(self) -> dict:
        """What main() returned, as the API shows it: {"present": bool, "value": …}."""
        if not self.result_present:
            return dict(NOTHING_RETURNED)
        return {"present": True, "value": self.result}

    # State machine. Every transition is one conditional UPDATE, so two deliveries of the same task,
    # or a cancel racing a finish, cannot both win.

    @classmethod
    def claim(cls, execution_id, worker: str) -> "Execution | None":
        """queued → running. None when another delivery already took it or it is no longer queued."""
        now = timezone.now()
        claimed = cls.objects.filter(pk=execution_id, status=Status.QUEUED).update(
            status=Status.RUNNING,
            started_at=now,
            worker=worker,
            attempts=models.F("attempts") + 1,
            queue_wait=models.ExpressionWrapper(now - models.F("created_at"), output_field=models.DurationField()),
        )
        return cls.objects.get(pk=execution_id) if claimed else None

    def finish(self, outcome: ExecutionResult, worker: str | None = None) -> bool:
        """running → a terminal status, recording everything observed. False when it had already ended (or,
        with `worker`, when another instance holds it now)."""
        artifacts, stored_bytes = artifact_store.offload_artifacts(self, storable(outcome.artifacts))
        stdout, stdout_file, stdout_bytes = artifact_store.offload_output(self, "stdout", storable(outcome.stdout))
        stderr, stderr_file, stderr_bytes = artifact_store.offload_output(self, "stderr", storable(outcome.stderr))
        fields = {
            "status": outcome.status,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_file": stdout_file,
            "stderr_file": stderr_file,
            "stdout_truncated": outcome.stdout_truncated,
            "stderr_truncated": outcome.stderr_truncated,
            "exit_code": outcome.exit_code,
            "result_present": outcome.result_present,
            "result": storable(outcome.result_value),
            "artifacts": artifacts,
            "stored_bytes": self.stored_bytes + stored_bytes + stdout_bytes + stderr_bytes
            + json_bytes(outcome.result_value),
            "rejected_artifacts": storable(outcome.rejected_artifacts),
            "error_code": outcome.error_code,
            "error_message": storable(outcome.error_message),
            "execution_time": outcome.execution_time,
            "memory_used_kb": outcome.memory_used_kb,
            "sandbox_id": outcome.sandbox_id,
            "egress": storable(outcome.egress),
            "finished_at": timezone.now(),
        }
        done = self._end(fields, [Status.RUNNING], worker, session_ends=outcome.session_ended)
        if done:
            for name, value in fields.items():  # what was stored is what we hold: no re-read needed
                setattr(self, name, value)
            if outcome.egress:
                egress_policy.count_run(self.caller_id, outcome.egress)
        else:
            # The row never named these files.
            artifact_store.delete_files(Execution(pk=self.pk, artifacts=artifacts, stdout_file=stdout_file,
                                         stderr_file=stderr_file))
            self.refresh_from_db()
        return bool(done)

    def end_with_error(self, status: Status, code: str, message: str, worker: str | None = None) -> bool:
        """queued or running → a terminal status with an error (cancel, infrastructure fault, lost worker);
        with `worker`, only a run that instance is running."""
        fields = {
            "status": status, "error_code": code, "error_message": storable(message), "finished_at": timezone.now(),
        }
        done = self._end(fields, [Status.RUNNING] if worker else [Status.QUEUED, Status.RUNNING], worker)
        self.refresh_from_db()
        return done

    def _end(self, fields: dict, from_statuses: list[Status], worker: str | None = None,
             session_ends: str = "") -> bool:
        """The one terminal transition: a conditional UPDATE that also records the callback owed, if any, and
        — for a session's cell after which the session cannot go on — ends the session in the same commit,
        so no caller who has this cell's answer can still see the session active."""
        if self.callback_url:
            fields = {**fields, "callback_status": "pending", "callback_due_at": fields["finished_at"]}
        rows = Execution.objects.filter(pk=self.pk, status__in=from_statuses)
        if worker:
            rows = rows.filter(worker=worker)
        with transaction.atomic():  # one commit; the notice and the callback follow only a visible row
            done = bool(rows.update(**fields))
            if done and session_ends and self.session_id:
                Session(pk=self.session_id).end(SessionStatus.ENDED, session_ends)
            if done:
                notify.announce_finished(self.pk)
                ended = {"execution_id": self.pk, "caller_id": self.caller_id, "callback": bool(self.callback_url)}
                transaction.on_commit(lambda: execution_ended.send(Execution, **ended))
        return done

    def was_cancelled(self) -> bool:
        """Asked by the worker while a run is quiet, so a cancel stops the sandbox instead of waiting it out.
        A database that is briefly away (a restart) is no reason to stop a run: the answer is then no."""
        try:
            return Execution.objects.filter(pk=self.pk, status=Status.CANCELLED).exists()
        except (OperationalError, InterfaceError):
            close_old_connections()
            return False

    def requeue(self) -> bool:
        """running → queued, only for a run whose worker vanished (the reconciler's single retry)."""
        done = Execution.objects.filter(pk=self.pk, status=Status.RUNNING, worker=self.worker).update(
            status=Status.QUEUED, started_at=None, dispatched_at=timezone.now()
        )
        self.refresh_from_db()
        return bool(done)


class SandboxRecord:
    """The run's ledger of its remote sandbox (providers.base.SandboxLedger), written as it happens, so a
    sandbox whose delete failed, or whose create answer was lost, is still found and deleted later."""

    def __init__(self, execution_id) -> None:
        self.rows = Execution.objects.filter(pk=execution_id)

    def creating(self) -> None:
        self.rows.update(sandbox_released=False)

    def created(self, instance_id: str) -> None:
        self.rows.update(sandbox_id=instance_id)

    def released(self) -> None:
        self.rows.update(sandbox_released=True)


class SessionStatus(models.TextChoices):
    STARTING = "starting"
    ACTIVE = "active"
    ENDED = "ended"  # deleted, idle, at its lifetime, or a cell ended it (end_reason says which)
    LOST = "lost"  # its worker host died: the sandbox went with it
    FAILED = "failed"  # it never opened


LIVE_SESSION = (SessionStatus.STARTING, SessionStatus.ACTIVE)


class Session(models.Model):
    """A sandbox that lives between cells on one worker host (sessions.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    caller = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="sessions")
    provider = models.CharField(max_length=64)
    language = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=SessionStatus.choices, default=SessionStatus.STARTING,
                              db_index=True)
    end_reason = models.CharField(max_length=300, blank=True, default="")
    limits = models.JSONField(default=dict)  # memory_mb and output_limit for every cell
    idle_timeout = models.FloatField()
    max_lifetime = models.FloatField()
    worker = models.CharField(max_length=255, blank=True, default="")
    queue = models.CharField(max_length=255, blank=True, default="")
    sandbox_id = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.language} session {self.id} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_SESSION

    @property
    def expires_at(self):
        """When it ends unless a cell comes first: idle_timeout after the last activity, at most max_lifetime."""
        from datetime import timedelta

        idle = self.last_active_at + timedelta(seconds=self.idle_timeout)
        return min(idle, self.created_at + timedelta(seconds=self.max_lifetime))

    def end(self, status: str, reason: str) -> bool:
        """starting or active → ended, lost or failed; False when it had ended already."""
        return bool(Session.objects.filter(pk=self.pk, status__in=LIVE_SESSION).update(
            status=status, end_reason=storable(reason)[:300], ended_at=timezone.now()))


class RequestStatus(models.TextChoices):
    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"


class SessionRequest(models.Model):
    """Opening a session, or one file request to it, as the worker that holds the sandbox answers it. The web
    waits for it as for an execution (notify.py); file bytes travel through the file store (`blob`,
    transfers.py). A request lives until its answer is given: then the web deletes it, so no answer body
    (a listing, a download) stays in a row or the store."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="requests")
    kind = models.CharField(max_length=8)  # open, put, get, list, delete
    path = models.CharField(max_length=1024, blank=True, default="")
    status = models.CharField(max_length=8, choices=RequestStatus.choices, default=RequestStatus.QUEUED)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)  # what the worker needs (the opening files)
    answer = models.JSONField(default=dict, blank=True)  # what it answered (a listing, a size)
    blob = models.CharField(max_length=255, blank=True, default="")  # file bytes in the store, either way
    blob_bytes = models.BigIntegerField(default=0)  # their size: counted against the account's storage quota
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.path} ({self.status})".replace("  ", " ")

    @property
    def is_done(self) -> bool:
        return self.status != RequestStatus.QUEUED

    def complete(self, answer: dict | None = None, blob: str = "", blob_bytes: int = 0) -> bool:
        return self._end(status=RequestStatus.DONE, answer=answer or {}, blob=blob, blob_bytes=blob_bytes)

    def fail(self, code: str, message: str) -> bool:
        return self._end(status=RequestStatus.FAILED, error_code=code, error_message=storable(message)[:2000])

    def _end(self, **fields) -> bool:
        with transaction.atomic():
            done = bool(SessionRequest.objects.filter(pk=self.pk, status=RequestStatus.QUEUED).update(
                finished_at=timezone.now(), **fields))
            if done:
                notify.announce_finished(self.pk)
        return done
