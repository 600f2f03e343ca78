"""The operations dashboard (/admin/dashboard/): is the service healthy, at a glance.

Runs per hour by status over the last 24 h, p50/p95 run time and queue wait, the sandbox-error rate, runs
per provider, the active provider's health and warm sandboxes per worker and language — charts drawn here
as SVG on the server, so the page needs no script and no CDN.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib import admin
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from providers import config_store, manager
from providers.heartbeats import live_workers
from sandboxctl.executions.models import Execution

HOURS = 24
ROW_CAP = 50_000  # the most runs one page view reads
# Status → (group, colour): the chart stacks groups, worst on top.
GROUPS = {
    "succeeded": "succeeded", "failed": "failed (user code)", "timeout": "limits", "memory_limit": "limits",
    "output_limit": "limits", "cancelled": "cancelled", "sandbox_error": "sandbox error",
}
COLOURS = {"succeeded": "#2e9e44", "failed (user code)": "#e69500", "limits": "#d4b000", "cancelled": "#999999",
           "sandbox error": "#c62828"}
CHART_WIDTH, CHART_HEIGHT, MARGIN = 720, 180, 28


@dataclass
class Summary:
    hours: list[datetime]
    per_hour: list[dict[str, int]]
    total: int = 0
    sandbox_errors: int = 0
    by_provider: dict[str, int] = field(default_factory=dict)
    run_time: dict[str, float | None] = field(default_factory=dict)
    queue_wait: dict[str, float | None] = field(default_factory=dict)

    @property
    def sandbox_error_rate(self) -> float:
        return self.sandbox_errors / self.total if self.total else 0.0


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summarize(rows, now: datetime) -> Summary:
    """`rows`: (created_at, status, provider, execution_time, queue_wait) of the last HOURS hours."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    summary = Summary(hours=[start + timedelta(hours=n) for n in range(HOURS)],
                      per_hour=[{group: 0 for group in COLOURS} for _ in range(HOURS)])
    run_times, waits = [], []
    for created_at, status, provider, execution_time, queue_wait in rows:
        slot = int((created_at - start).total_seconds() // 3600)
        if not 0 <= slot < HOURS or status not in GROUPS:
            continue
        summary.per_hour[slot][GROUPS[status]] += 1
        summary.total += 1
        summary.sandbox_errors += status == "sandbox_error"
        summary.by_provider[provider] = summary.by_provider.get(provider, 0) + 1
        if execution_time is not None:
            run_times.append(execution_time)
        if queue_wait is not None:
            waits.append(queue_wait.total_seconds())
    summary.run_time = {"p50": percentile(run_times, 0.5), "p95": percentile(run_times, 0.95)}
    summary.queue_wait = {"p50": percentile(waits, 0.5), "p95": percentile(waits, 0.95)}
    return summary


def runs_chart(summary: Summary) -> str:
    """Stacked bars, one per hour, with a y axis scaled to the busiest hour."""
    busiest = max([sum(hour.values()) for hour in summary.per_hour] + [1])
    slot = (CHART_WIDTH - MARGIN) / HOURS
    bars = []
    for index, (hour, counts) in enumerate(zip(summary.hours, summary.per_hour, strict=True)):
        bottom = CHART_HEIGHT
        for group, count in counts.items():
            if not count:
                continue
            height = count / busiest * (CHART_HEIGHT - 10)
            bottom -= height
            # format_html escapes its arguments into text, so numbers are formatted before they go in.
            bars.append((f"{MARGIN + index * slot + 2:.1f}", f"{bottom:.1f}", f"{slot - 4:.1f}", f"{height:.1f}",
                         COLOURS[group], f"{hour:%H}:00 {group}: {count}"))
    labels = [(f"{MARGIN + index * slot + slot / 2:.1f}", CHART_HEIGHT + 14, f"{hour:%H}")
              for index, hour in enumerate(summary.hours) if index % 3 == 0]
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-labelledby="runs-title">'
        '<title id="runs-title">Runs per hour by status, last 24 hours (busiest hour: {})</title>'
        '<text x="0" y="10" class="axis">{}</text><line x1="{}" y1="{}" x2="{}" y2="{}" class="axis-line"/>'
        "{}{}</svg>",
        CHART_WIDTH, CHART_HEIGHT + 20, busiest, busiest, MARGIN, CHART_HEIGHT, CHART_WIDTH, CHART_HEIGHT,
        format_html_join("", '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>', bars),
        format_html_join("", '<text x="{}" y="{}" class="axis" text-anchor="middle">{}</text>', labels),
    )


def pool_rows() -> list[tuple[str, str, int]]:
    return [(beat.worker, language, count) for beat in live_workers().order_by("worker")
            for language, count in sorted(beat.pool_depth.items())]


def dashboard(request):
    now = timezone.now()
    rows = (Execution.objects.filter(created_at__gte=now - timedelta(hours=HOURS))
            .values_list("created_at", "status", "provider", "execution_time", "queue_wait")[:ROW_CAP])
    summary = summarize(rows, now)
    active = config_store.active_name()
    health = manager.provider(active).health_check()
    context = {
        **admin.site.each_context(request),
        "title": "Operations dashboard",
        "summary": summary,
        "runs_chart": runs_chart(summary),
        "legend": COLOURS.items(),
        "pools": pool_rows(),
        "active": active,
        "health": health,
        "error_rate": f"{summary.sandbox_error_rate:.1%}",
    }
    return render(request, "admin/dashboard.html", context)
