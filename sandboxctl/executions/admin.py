"""Execution history in Django admin: read-only, readable (monospace, highlighted code, folded output, charts
the code drew shown as pictures) and downloadable by staff."""

import base64
import json

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header
from django.utils.safestring import mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import JavascriptLexer, PythonLexer

from sandboxctl.egress.admin import AccountEgressInline
from sandboxctl.executions import artifact_store, retention
from sandboxctl.executions.models import ApiToken, Execution, Session

FOLD_AFTER_LINES = 300
INLINE_IMAGES = ("image/png", "image/jpeg", "image/svg+xml")
HIGHLIGHT_MAX_CHARS = 64 * 1024
LEXERS = {"python": PythonLexer, "nodejs": JavascriptLexer}


def seconds(value) -> str:
    """One way to show a duration everywhere in the history: seconds with three decimals."""
    if value is None:
        return "—"
    if hasattr(value, "total_seconds"):
        value = value.total_seconds()
    return f"{value:.3f} s"


def folded(text: str, download_url: str) -> str:
    """Monospace with whitespace kept; past FOLD_AFTER_LINES lines the rest is behind "show all" and a link."""
    if not text:
        return "—"
    lines = text.splitlines(keepends=True)
    if len(lines) <= FOLD_AFTER_LINES:
        return format_html('<pre class="run-output">{}</pre>', text)
    head, rest = "".join(lines[:FOLD_AFTER_LINES]), "".join(lines[FOLD_AFTER_LINES:])
    return format_html(
        '<pre class="run-output">{}</pre><details class="run-fold"><summary>show all ({} more lines)</summary>'
        '<pre class="run-output">{}</pre></details><p><a href="{}" download>download the whole output</a></p>',
        head, len(lines) - FOLD_AFTER_LINES, rest, download_url,
    )


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ("short_id", "status", "error", "language", "provider", "duration", "waited", "caller",
                    "created_at")
    list_filter = ("status", "language", "provider", "error_code", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "code_sha256", "caller__username", "idempotency_key", "error_code", "error_message")
    date_hierarchy = "created_at"
    list_select_related = ("caller",)
    fieldsets = (
        (None, {"fields": ("outcome_banner", "id", "status", "language", "provider", "caller", "token", "session",
                           "worker", "sandbox_id", "sandbox_released")}),
        ("Code", {"fields": ("highlighted_code", "code_sha256", "pretty_arguments", "limits", "requested_limits")}),
        ("Outcome", {"fields": ("exit_code", "pretty_result", "stdout_view", "stdout_truncated", "stderr_view",
                                "stderr_truncated", "error_code", "error_message", "artifact_list",
                                "rejected_artifacts")}),
        ("Egress", {"fields": ("egress_table",)}),
        ("Timing", {"fields": ("created_at", "started_at", "finished_at", "duration", "waited", "memory_used_kb",
                               "attempts")}),
        ("Delivery", {"fields": ("idempotency_key", "callback_url", "callback_status", "callback_attempts",
                                 "callback_error")}),
    )

    class Media:
        css = {"all": ("executions/history.css",)}
        js = ("executions/live.js",)  # a running run's output, live (GET /api/v1/executions/{id}/events)

    def get_readonly_fields(self, request, obj=None):
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<uuid:pk>/output/<str:stream>.txt", view(self.download_output), name="executions_output"),
            path("<uuid:pk>/artifacts/<int:index>/", view(self.download_artifact), name="executions_artifact"),
            *super().get_urls(),
        ]

    # Downloads (staff only, through admin_view). Always attachments with no sniffing, so an html or svg the
    # code wrote is never rendered on the admin's origin.

    def download_output(self, request, pk, stream: str):
        if stream not in ("stdout", "stderr", "code"):
            raise Http404("no such stream")
        execution = get_object_or_404(Execution, pk=pk)
        text = execution.code if stream == "code" else artifact_store.output(execution, stream)
        return attachment(text.encode("utf-8"), f"{execution.pk}-{stream}.txt",
                          "text/plain; charset=utf-8")

    def download_artifact(self, request, pk, index: int):
        execution = get_object_or_404(Execution, pk=pk)
        if not 0 <= index < len(execution.artifacts):
            raise Http404("no such artifact")
        artifact = execution.artifacts[index]
        return attachment(artifact_store.content(artifact), artifact.get("name", "artifact"),
                          "application/octet-stream")

    # List columns.

    @admin.display(description="id", ordering="id")
    def short_id(self, execution: Execution):
        return format_html('<span class="run-id" title="{}">{}</span>', execution.pk, str(execution.pk)[:8])

    @admin.display(description="error", ordering="error_code")
    def error(self, execution: Execution):
        if not execution.error_code:
            return "—"
        return format_html('<span title="{}">{}</span>', execution.error_message, execution.error_code)

    @admin.display(description="run time", ordering="execution_time")
    def duration(self, execution: Execution):
        return seconds(execution.execution_time)

    @admin.display(description="queue wait", ordering="queue_wait")
    def waited(self, execution: Execution):
        return seconds(execution.queue_wait)

    # Detail.

    @admin.display(description="outcome")
    def outcome_banner(self, execution: Execution):
        kind = "ok" if execution.status == "succeeded" else "pending" if not execution.is_terminal else "problem"
        text = execution.status if not execution.error_code else (
            f"{execution.status}: {execution.error_code} — {execution.error_message}")
        return format_html('<div class="run-banner {}" role="status">{}</div>', kind, text)

    @admin.display(description="code")
    def highlighted_code(self, execution: Execution):
        if len(execution.code) > HIGHLIGHT_MAX_CHARS:
            # Highlighting is superlinear on some inputs (1 MB of `(` took 9.7 s of a web thread): show it plain.
            return format_html('<pre class="run-code">{}</pre>', execution.code)
        lexer = LEXERS.get(execution.language, PythonLexer)()
        html = highlight(execution.code, lexer, HtmlFormatter(cssclass="run-code", nowrap=False))
        return mark_safe(html)  # Pygments escapes the code it formats

    @admin.display(description="arguments")
    def pretty_arguments(self, execution: Execution):
        return format_html('<pre class="run-output">{}</pre>', json.dumps(execution.arguments, indent=2,
                                                                           ensure_ascii=False))

    @admin.display(description="result")
    def pretty_result(self, execution: Execution):
        if not execution.result_present:
            return "—"
        return format_html('<pre class="run-output">{}</pre>', json.dumps(execution.result, indent=2,
                                                                           ensure_ascii=False))

    @admin.display(description="stdout")
    def stdout_view(self, execution: Execution):
        if not execution.is_terminal:
            return live_output(execution, "stdout")
        return folded(artifact_store.output(execution, "stdout"), reverse("admin:executions_output",
                                                                 args=[execution.pk, "stdout"]))

    @admin.display(description="stderr")
    def stderr_view(self, execution: Execution):
        if not execution.is_terminal:
            return live_output(execution, "stderr")
        return folded(artifact_store.output(execution, "stderr"), reverse("admin:executions_output",
                                                                 args=[execution.pk, "stderr"]))

    @admin.display(description="artifacts")
    def artifact_list(self, execution: Execution):
        if not execution.artifacts:
            return "—"
        items = []
        for index, artifact in enumerate(execution.artifacts):
            url = reverse("admin:executions_artifact", args=[execution.pk, index])
            picture = ""
            if artifact.get("mime_type") in INLINE_IMAGES and artifact.get("size", 0) <= artifact_store.inline_limit():
                # An <img> never runs scripts, so even an svg the code wrote is safe to show this way.
                picture = format_html('<img class="run-artifact" alt="{}" src="data:{};base64,{}">',
                                      artifact["name"], artifact["mime_type"],
                                      base64.b64encode(artifact_store.content(artifact)).decode())
            items.append((picture, url, artifact["name"], artifact.get("mime_type", ""), artifact.get("size", 0)))
        return format_html('<ul class="run-artifacts">{}</ul>', format_html_join(
            "", '<li>{}<a href="{}" download>{}</a> ({}, {} bytes)</li>', items))

    @admin.display(description="connections")
    def egress_table(self, execution: Execution):
        """The run's connections through the egress proxy (none without an allowlist)."""
        allowlist = (execution.limits or {}).get("egress") or []
        if not execution.egress:
            return format_html("{} <span class=\"run-note\">(may reach: {})</span>", "none",
                               ", ".join(allowlist) or "nowhere")
        rows = [(record.get("host"), record.get("port"), "allowed" if record.get("allowed") else "refused",
                 record.get("reason") or "", record.get("bytes_out"), record.get("bytes_in"))
                for record in execution.egress]
        return format_html(
            '<p class="run-note">may reach: {}</p><table class="run-egress"><thead><tr><th>host</th><th>port</th>'
            "<th>outcome</th><th>reason</th><th>bytes out</th><th>bytes in</th></tr></thead><tbody>{}</tbody>"
            "</table>", ", ".join(allowlist) or "nowhere",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows))


def live_output(execution: Execution, stream: str) -> str:
    """An empty pane that executions/live.js fills with the run's output as it is written."""
    return format_html('<pre class="run-output" data-live-stream="{}" data-live-events="{}"></pre>', stream,
                       reverse("execution-events", args=[execution.pk]))


def attachment(content: bytes, name: str, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response


class CellInline(admin.TabularInline):
    """A session's cells in order, each linking to its full record in the history."""

    model = Execution
    fields = ("cell", "status", "first_line", "run_time", "created_at")
    readonly_fields = fields
    ordering = ("created_at",)
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = "cells"

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="cell")
    def cell(self, execution: Execution):
        url = reverse("admin:executions_execution_change", args=[execution.pk])
        return format_html('<a href="{}"><code>{}</code></a>', url, str(execution.pk)[:8])

    @admin.display(description="code")
    def first_line(self, execution: Execution):
        line = execution.code.strip().splitlines()[0] if execution.code.strip() else ""
        return format_html("<code>{}</code>", line[:120])

    @admin.display(description="run time")
    def run_time(self, execution: Execution):
        return seconds(execution.execution_time)


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ("short_id", "status", "language", "caller", "cell_count", "worker", "created_at", "ended_at")
    list_filter = ("status", "language", "provider", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "caller__username", "worker", "end_reason")
    date_hierarchy = "created_at"
    list_select_related = ("caller",)
    fields = ("id", "status", "end_reason", "language", "provider", "caller", "limits", "idle_timeout",
              "max_lifetime", "worker", "queue", "sandbox_id", "created_at", "started_at", "last_active_at",
              "ended_at")
    readonly_fields = fields
    inlines = [CellInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="id", ordering="id")
    def short_id(self, session: Session):
        return str(session.pk)[:8]

    @admin.display(description="cells")
    def cell_count(self, session: Session):
        return session.cells.count()


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


@admin.action(description="Delete all ended executions and files of the selected accounts",
              permissions=["delete"])
def purge_account_data(modeladmin, request, queryset):
    for account in queryset:
        deleted = retention.purge_account(account.pk)
        modeladmin.message_user(request, f"{account}: {deleted} executions and their files deleted", messages.SUCCESS)


# The account list gets the purge action; everything else of Django's user admin stays as it is (the auth
# app comes before this one in INSTALLED_APPS, so its registration is there to replace).
admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class AccountAdmin(UserAdmin):
    actions = [purge_account_data]
    inlines = [*UserAdmin.inlines, AccountEgressInline]
