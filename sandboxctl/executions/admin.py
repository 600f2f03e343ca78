import json

from django.contrib import admin, messages
from django.utils.html import format_html

from sandboxctl.executions.models import ApiToken, Execution


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "language", "provider", "duration", "caller", "created_at")
    list_filter = ("status", "language", "provider", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "code_sha256", "caller__username", "idempotency_key")
    date_hierarchy = "created_at"
    list_select_related = ("caller",)
    fieldsets = (
        (None, {"fields": ("id", "status", "language", "provider", "caller", "token", "worker", "sandbox_id")}),
        ("Code", {"fields": ("code", "code_sha256", "pretty_arguments", "limits", "requested_limits")}),
        ("Outcome", {"fields": ("exit_code", "pretty_result", "stdout", "stdout_truncated", "stderr",
                                "stderr_truncated", "error_code", "error_message", "artifact_list",
                                "rejected_artifacts")}),
        ("Timing", {"fields": ("created_at", "started_at", "finished_at", "execution_time", "queue_wait",
                               "memory_used_kb", "attempts")}),
        ("Delivery", {"fields": ("idempotency_key", "callback_url", "callback_status", "callback_attempts",
                                 "callback_error")}),
    )

    def get_readonly_fields(self, request, obj=None):
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="duration (s)", ordering="execution_time")
    def duration(self, execution: Execution):
        return None if execution.execution_time is None else round(execution.execution_time, 3)

    @admin.display(description="arguments")
    def pretty_arguments(self, execution: Execution):
        return format_html("<pre>{}</pre>", json.dumps(execution.arguments, indent=2, ensure_ascii=False))

    @admin.display(description="result")
    def pretty_result(self, execution: Execution):
        if not execution.result_present:
            return "—"
        return format_html("<pre>{}</pre>", json.dumps(execution.result, indent=2, ensure_ascii=False))

    @admin.display(description="artifacts")
    def artifact_list(self, execution: Execution):
        rows = [f"{a['name']} ({a['mime_type']}, {a['size']} bytes)" for a in execution.artifacts]
        return ", ".join(rows) or "—"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "created_at", "last_used_at")
    search_fields = ("name", "prefix", "user__username")
    fields = ("user", "name", "prefix", "created_at", "last_used_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        token, key = ApiToken.issue(obj.user, name=obj.name)
        obj.pk = token.pk
        self.message_user(request, f"New API token (shown once, copy it now): {key}", messages.WARNING)
