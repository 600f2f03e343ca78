"""Execution history in Django admin: read-only and readable (a run is shown as a notebook cell, a session as a
notebook of its cells that fills in while it lives, display.py), lists that fit a laptop's screen, downloads for
staff."""

import re

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header

from sandboxctl.egress.admin import AccountEgressInline
from sandboxctl.executions import artifact_store, display, retention
from sandboxctl.executions.display import EMPTY, seconds
from sandboxctl.executions.models import ApiToken, Execution, Session


def short_id(record) -> str:
    return format_html('<span class="run-id" title="{}">{}</span>', record.pk, str(record.pk)[:8])


def when(moment) -> str:
    """A time in a list, as short as it can be told: the clock today, the day and time this year, else the date;
    the whole timestamp in its title."""
    if moment is None:
        return EMPTY
    local, today = timezone.localtime(moment), timezone.localdate()
    short = (f"{local:%H:%M:%S}" if local.date() == today else f"{local:%d %b %H:%M}" if local.year == today.year
             else f"{local:%Y-%m-%d}")
    return format_html('<time datetime="{}" title="{}">{}</time>', local.isoformat(),
                       f"{local:%Y-%m-%d %H:%M:%S %Z}", short)


def two_lines(first: str, second: str, title: str = "") -> str:
    """A list cell with a second, quieter line (truncated, whole in its title), so two facts take one column."""
    if not second:
        return format_html("{}", first)
    return format_html('{}<span class="run-sub" title="{}">{}</span>', first, title or second, second)


def clipped(text: str) -> str:
    """Text that may be long (a user or worker name), cut to its column with the whole in its title."""
    return format_html('<span class="run-clip" title="{}">{}</span>', text, text) if text else EMPTY


class ErrorCodeFilter(admin.SimpleListFilter):
    """Runs by error code, the runs without one listed as "none" (Django's own filter draws them as a nameless
    link)."""

    title = "error code"
    parameter_name = "error_code"
    NONE = "-"

    def lookups(self, request, model_admin):
        codes = (Execution.objects.exclude(error_code="").order_by("error_code")
                 .values_list("error_code", flat=True).distinct())
        return [(self.NONE, "none"), *((code, code) for code in codes)]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(error_code="" if self.value() == self.NONE else self.value())


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ("run_id", "outcome", "runs_on", "timing", "caller_name", "created")
    list_filter = ("status", "language", "provider", ErrorCodeFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "code_sha256", "caller__username", "idempotency_key", "error_code", "error_message")
    date_hierarchy = "created_at"
    list_select_related = ("caller",)
    change_form_template = "admin/executions/execution/change_form.html"
    # The code, output, result, error and artifacts are the page's cell (display.py); these are the rest.
    fieldsets = (
        (None, {"fields": ("id", "status", "language", "provider", "caller", "token", "session_cell", "worker",
                           "sandbox_id", "remote_sandbox")}),
        ("Input", {"fields": ("code_sha256", "limits", "requested_limits")}),
        ("Outcome", {"fields": ("exit_code", "error_code", "error_message", "memory_used_kb", "refused_artifacts")}),
        ("Egress", {"fields": ("egress_table",)}),
        ("Timing", {"fields": ("created_at", "started_at", "finished_at", "duration", "waited", "attempts")}),
        ("Delivery", {"fields": ("idempotency_key", "callback_url", "callback_status", "callback_attempts",
                                 "callback_error")}),
    )

    class Media:
        css = {"all": ("executions/history.css",)}
        js = ("executions/live.js",)  # a running run's output, live (GET /api/v1/executions/{id}/events)

    def get_readonly_fields(self, request, obj=None):
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    # A record of what happened: nobody adds, edits or deletes one here (retention deletes rows with their files).

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["cell"] = display.cell(obj, display.cell_number(obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

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

    # List columns: six, two facts in some, so the list fits beside the filters on a 1366 px screen.

    @admin.display(description="run", ordering="id")
    def run_id(self, execution: Execution):
        return short_id(execution)

    @admin.display(description="outcome", ordering="status")
    def outcome(self, execution: Execution):
        status = format_html('<span class="run-status {}">{}</span>', display.outcome_kind(execution.status),
                             execution.status)
        return two_lines(status, execution.error_code, execution.error_message)

    @admin.display(description="language", ordering="language")
    def runs_on(self, execution: Execution):
        return two_lines(execution.language, execution.provider)

    @admin.display(description="run time", ordering="execution_time")
    def timing(self, execution: Execution):
        waited = f"waited {seconds(execution.queue_wait)}" if execution.queue_wait is not None else ""
        return two_lines(seconds(execution.execution_time), waited)

    @admin.display(description="caller", ordering="caller__username")
    def caller_name(self, execution: Execution):
        return clipped(execution.caller.username if execution.caller else "")

    @admin.display(description="created", ordering="created_at")
    def created(self, execution: Execution):
        return when(execution.created_at)

    # Detail fields.

    @admin.display(description="session")
    def session_cell(self, execution: Execution):
        number = display.cell_number(execution)
        if number is None:
            return EMPTY
        url = reverse("admin:executions_session_change", args=[execution.session_id])
        return format_html('<a href="{}#cell-{}">cell {} of session {}</a>', url, number, number,
                           str(execution.session_id)[:8])

    @admin.display(description="remote sandbox")
    def remote_sandbox(self, execution: Execution):
        return "deleted, or never made" if execution.sandbox_released else "may still exist: the reconciler deletes it"

    @admin.display(description="refused artifacts")
    def refused_artifacts(self, execution: Execution):
        refused = execution.rejected_artifacts or []
        return "; ".join(f"{entry.get('name', '?')}: {entry.get('reason', '?')}" for entry in refused) or EMPTY

    @admin.display(description="run time")
    def duration(self, execution: Execution):
        return seconds(execution.execution_time)

    @admin.display(description="queue wait")
    def waited(self, execution: Execution):
        return seconds(execution.queue_wait)

    @admin.display(description="connections")
    def egress_table(self, execution: Execution):
        """The run's connections through the egress proxy (none without an allowlist)."""
        allowlist = (execution.limits or {}).get("egress") or []
        if not execution.egress:
            return format_html("{} <span class=\"run-reach\">(may reach: {})</span>", "none",
                               ", ".join(allowlist) or "nowhere")
        rows = [(record.get("host"), record.get("port"), "allowed" if record.get("allowed") else "refused",
                 record.get("reason") or "", record.get("bytes_out"), record.get("bytes_in"))
                for record in execution.egress]
        return format_html(
            '<p class="run-reach">may reach: {}</p><table class="run-egress"><thead><tr><th>host</th><th>port</th>'
            "<th>outcome</th><th>reason</th><th>bytes out</th><th>bytes in</th></tr></thead><tbody>{}</tbody>"
            "</table>", ", ".join(allowlist) or "nowhere",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows))



def attachment(content: bytes, name: str, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response


def session_state(session: Session) -> tuple[str, str]:
    """(status, what follows from it): when a live session ends unless used, or why it ended."""
    if session.is_live:
        return session.status, f"ends by {timezone.localtime(session.expires_at):%H:%M:%S}"
    return session.status, session.end_reason


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    """A session's page is its notebook: every cell in order, new ones appearing while it lives."""

    list_display = ("session_id", "state", "runs_on", "caller_name", "cell_count", "worker_name", "created")
    list_filter = ("status", "language", "provider", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "caller__username", "worker", "end_reason")
    date_hierarchy = "created_at"
    list_select_related = ("caller",)
    change_form_template = "admin/executions/session/change_form.html"
    fieldsets = (("Details", {"classes": ("collapse",), "fields": (
        "id", "status", "end_reason", "language", "provider", "caller", "limits", "idle_timeout", "max_lifetime",
        "worker", "queue", "sandbox_id", "created_at", "started_at", "last_active_at", "ended_at")}),)
    readonly_fields = fieldsets[0][1]["fields"]

    class Media:
        css = {"all": ("executions/history.css",)}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(cell_total=Count("cells"))

    def get_urls(self):
        cells = path("<uuid:pk>/cells/", self.admin_site.admin_view(self.cells_view), name="executions_session_cells")
        return [cells, *super().get_urls()]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["cells"] = display.session_cells(obj)
            context["state"] = session_state(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def cells_view(self, request, pk):
        """The notebook's live part: the cells after the first `after` (those the page holds finished), each
        drawn as the page draws it, and whether the session lives on."""
        if not self.has_view_permission(request):
            return JsonResponse({"detail": "staff only"}, status=403)
        after = request.GET.get("after", "0")
        if not re.fullmatch(r"[0-9]{1,9}", after):  # a cell count: no sign, no other digits, no huge offset
            return JsonResponse({"after": "must be a whole number from 0 to 999999999"}, status=400)
        session = get_object_or_404(Session, pk=pk)
        cells = [{"number": cell.number, "terminal": cell.terminal,
                  "html": render_to_string("admin/executions/cell.html", {"cell": cell}, request)}
                 for cell in display.session_cells(session, int(after))]
        status, detail = session_state(session)
        return JsonResponse({"live": session.is_live, "status": status, "detail": detail, "cells": cells})

    # List columns.

    @admin.display(description="session", ordering="id")
    def session_id(self, session: Session):
        return short_id(session)

    @admin.display(description="status", ordering="status")
    def state(self, session: Session):
        status, detail = session_state(session)
        return two_lines(status, detail)

    @admin.display(description="language", ordering="language")
    def runs_on(self, session: Session):
        return two_lines(session.language, session.provider)

    @admin.display(description="caller", ordering="caller__username")
    def caller_name(self, session: Session):
        return clipped(session.caller.username if session.caller else "")

    @admin.display(description="cells", ordering="cell_total")
    def cell_count(self, session: Session):
        return session.cell_total

    @admin.display(description="worker", ordering="worker")
    def worker_name(self, session: Session):
        return clipped(session.worker)

    @admin.display(description="created", ordering="created_at")
    def created(self, session: Session):
        return when(session.created_at)


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
