"""Prometheus text exposition of the numbers an operator watches: warm sandboxes and executions by status."""

import hmac
import os

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse, JsonResponse

from providers.heartbeats import live_workers
from sandboxctl.api import server
from sandboxctl.egress.policy import metrics_lines as egress_lines
from sandboxctl.executions import notify
from sandboxctl.executions.models import Execution


def authorised(request) -> bool:
    """Only `Authorization: Bearer <SANDBOXCTL_METRICS_TOKEN>` may read the numbers; the value `public` opens
    them to anyone, and unset they are closed (they name workers, versions and every tenant's counts)."""
    expected = settings.SANDBOXCTL_METRICS_TOKEN
    if expected == "public":
        return True
    if not expected:
        return False
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), expected.encode())


def metrics(request):
    if not authorised(request):
        response = JsonResponse({"detail": "a Bearer token (SANDBOXCTL_METRICS_TOKEN; set it to "
                                 "`public` to open the metrics) is required",
                                 "code": "not_authenticated"}, status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    lines = [
        "# HELP sandboxctl_warm_sandboxes Warm sandboxes waiting for a run, per live worker and language.",
        "# TYPE sandboxctl_warm_sandboxes gauge",
    ]
    for beat in live_workers().order_by("worker"):
        for language, count in sorted(beat.pool_depth.items()):
            lines.append(f'sandboxctl_warm_sandboxes{{worker="{_label(beat.worker)}",language="{language}"}} {count}')
    lines += [
        "# HELP sandboxctl_runtime_info The container runtime, its version and gVisor platform, per live worker.",
        "# TYPE sandboxctl_runtime_info gauge",
    ]
    for beat in live_workers().order_by("worker"):
        if beat.runtime:
            labels = ",".join(f'{name}="{_label(str(beat.runtime.get(name, "")))}"'
                              for name in ("runtime", "version", "platform"))
            lines.append(f'sandboxctl_runtime_info{{worker="{_label(beat.worker)}",{labels}}} 1')
    lines += [
        "# HELP sandboxctl_executions Executions recorded, by status and provider.",
        "# TYPE sandboxctl_executions gauge",
    ]
    counts = Execution.objects.values("status", "provider").annotate(total=Count("id")).order_by("status", "provider")
    for row in counts:
        lines.append(f'sandboxctl_executions{{status="{row["status"]}",provider="{row["provider"]}"}} {row["total"]}')
    lines += egress_lines()
    lines += web_process_lines()
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")


def web_process_lines() -> list[str]:
    """The web process that answers: its requests waiting for a run, and its open connections (ASGI only)."""
    pid = os.getpid()
    return [
        "# HELP sandboxctl_web_waiting_requests Requests waiting for a run's end, in the web process that answered.",
        "# TYPE sandboxctl_web_waiting_requests gauge",
        f'sandboxctl_web_waiting_requests{{pid="{pid}"}} {notify.waiters.count()}',
        "# HELP sandboxctl_web_open_connections Open connections of the web process that answered.",
        "# TYPE sandboxctl_web_open_connections gauge",
        f'sandboxctl_web_open_connections{{pid="{pid}"}} {server.open_connections.total}',
    ]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
