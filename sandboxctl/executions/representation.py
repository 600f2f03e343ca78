"""An execution as callers see it: the body of the API's answers and of the callbacks, in one place (the API and
the callback delivery both use it; neither builds its own)."""

from rest_framework import serializers

from sandboxctl.executions import artifact_store
from sandboxctl.executions.models import Execution, Session


class ExecutionSerializer(serializers.ModelSerializer):
    stdout = serializers.SerializerMethodField()
    stderr = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    truncated = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    artifacts = serializers.SerializerMethodField()
    queue_wait = serializers.SerializerMethodField()
    input_files = serializers.SerializerMethodField()

    class Meta:
        model = Execution
        fields = [
            "id", "status", "language", "provider", "stdout", "stderr", "exit_code", "result",
            "execution_time", "memory_used_kb", "artifacts", "rejected_artifacts", "truncated", "error",
            "limits", "created_at", "started_at", "finished_at", "queue_wait", "session", "input_files", "egress",
        ]

    def get_input_files(self, execution: Execution) -> list[dict]:
        """The input files by path and size (their contents were the caller's to begin with)."""
        return [{"path": entry.get("path"), "size": len(entry.get("content_b64") or "") * 3 // 4
                 - (entry.get("content_b64") or "").count("=")} for entry in execution.input_files or []]

    def get_stdout(self, execution: Execution) -> str:
        return artifact_store.output(execution, "stdout")

    def get_stderr(self, execution: Execution) -> str:
        return artifact_store.output(execution, "stderr")

    def get_result(self, execution: Execution) -> dict:
        return execution.returned()

    def get_truncated(self, execution: Execution) -> dict:
        return {"stdout": execution.stdout_truncated, "stderr": execution.stderr_truncated}

    def get_error(self, execution: Execution) -> dict | None:
        if not execution.error_code:
            return None
        return {"code": execution.error_code, "message": execution.error_message}

    def get_queue_wait(self, execution: Execution) -> float | None:
        return None if execution.queue_wait is None else execution.queue_wait.total_seconds()

    def get_artifacts(self, execution: Execution) -> list[dict]:
        return artifact_store.described(execution, artifact_store.inline_limit(), self.context.get("request"))


class ExecutionSummarySerializer(ExecutionSerializer):
    """A listing's item: the first 4 KiB of stdout and stderr (artifact_store.OUTPUT_INLINE_CHARS), and artifacts by
    name, size and download URL, never their contents."""

    def get_stdout(self, execution: Execution) -> str:
        return execution.stdout

    def get_stderr(self, execution: Execution) -> str:
        return execution.stderr

    def get_artifacts(self, execution: Execution) -> list[dict]:
        return artifact_store.described(execution, None, self.context.get("request"))


class SessionSerializer(serializers.ModelSerializer):
    """A session as callers see it: when it ends unless used (`expires_at`), and why it ended."""

    expires_at = serializers.SerializerMethodField()
    memory_mb = serializers.SerializerMethodField()
    cells = serializers.SerializerMethodField()
    network = serializers.SerializerMethodField()

    class Meta:
        model = Session
        fields = ["id", "status", "language", "provider", "end_reason", "idle_timeout", "max_lifetime",
                  "memory_mb", "network", "cells", "created_at", "started_at", "last_active_at", "expires_at",
                  "ended_at"]

    def get_expires_at(self, session: Session) -> str | None:
        return serializers.DateTimeField().to_representation(session.expires_at) if session.is_live else None

    def get_memory_mb(self, session: Session) -> int | None:
        return session.limits.get("memory_mb")

    def get_network(self, session: Session) -> dict:
        """What its next cell may reach: the allowlist, presets expanded (empty: nowhere)."""
        return {"allow": list(session.limits.get("egress") or [])}

    def get_cells(self, session: Session) -> int:
        counted = getattr(session, "cell_count", None)  # annotated by listings, so a page is one query
        return session.cells.count() if counted is None else counted
