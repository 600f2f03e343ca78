"""The operations dashboard (/admin/dashboard/): is the service healthy, at a glance.

Runs per hour over the last 24 h by status and by provider, run time and queue wait (p50/p95 overall, p95 per
hour), the sandbox-error rate, the active provider's health and warm sandboxes per worker and language —
charts drawn here as SVG on the server, so the page needs no script and no CDN.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib import admin
from django.db.models import Count
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from providers import config_store, manager
from providers.heartbeats import live_workers
from sandboxctl.executions.models import LIVE_SESSION, Execution, Session

HOURS = 24
ROW_CAP = 50_000  # the most runs one page view reads
SESSION_ROWS = 100  # live sessions listed (the admin lists them all)
# Status → (group, colour): the chart stacks groups, worst on top.
GROUPS = {
    "succeeded": "succeeded", "failed": "failed (user code)", "timeout": "limits", "memory_limit": "limits",
    "output_limit": "limits", "cancelled": "cancelled", "sandbox_error": "sandbox error",
}
COLOURS = {"succeeded": "#2e9e44", "failed (user code)": "#e69500", "limits": "#d4b000", "cancelled": "#999999",
           "sandbox error": "#c62828"}
PROVIDER_COLOURS = ("#3b6e8f", "#8e44ad", "#16a085", "#d35400", "#7f8c8d")
LATENCY_COLOURS = {"run time p95": "#3b6e8f", "queue wait p95": "#d35400"}
CHART_WIDTH, CHART_HEIGHT, MARGIN = 720, 180, 28
# Room above the bars for the scale and below them for the hours, enough for the larger labels a phone gets
# (dashboard.css): the labels hang from fixed lines, so a bigger font grows into this room, not into the bars.
TOP_ROOM, BOTTOM_ROOM = 26, 30


@dataclass
class Summary:
    hours: list[datetime]
    per_hour: list[dict[str, int]]
    total: int = 0
    sandbox_errors: int = 0
    by_provider: dict[str, int] = field(default_factory=dict)
    run_time: dict[str, float | None] = field(default_factory=dict)
    queue_wait: dict[str, float | None] = field(default_factory=dict)
    provider_per_hour: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in range(HOURS)])
    latency_per_hour: list[dict[str, float]] = field(default_factory=list)

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
    hourly_run_times: list[list[float]] = [[] for _ in range(HOURS)]
    hourly_waits: list[list[float]] = [[] for _ in range(HOURS)]
    for created_at, status, provider, execution_time, queue_wait in rows:
        slot = int((created_at - start).total_seconds() // 3600)
        if not 0 <= slot < HOURS or status not in GROUPS:
            continue
        summary.per_hour[slot][GROUPS[status]] += 1
        summary.total += 1
        summary.sandbox_errors += status == "sandbox_error"
        summary.by_provider[provider] = summary.by_provider.get(provider, 0) + 1
        summary.provider_per_hour[slot][provider] = summary.provider_per_hour[slot].get(provider, 0) + 1
        if execution_time is not None:
            run_times.append(execution_time)
            hourly_run_times[slot].append(execution_time)
        if queue_wait is not None:
            waits.append(queue_wait.total_seconds())
            hourly_waits[slot].append(queue_wait.total_seconds())
    summary.run_time = {"p50": percentile(run_times, 0.5), "p95": percentile(run_times, 0.95)}
    summary.queue_wait = {"p50": percentile(waits, 0.5), "p95": percentile(waits, 0.95)}
    summary.latency_per_hour = [
        {"run time p95": percentile(times, 0.95) or 0.0, "queue wait p95": percentile(queued, 0.95) or 0.0}
        for times, queued in zip(hourly_run_times, hourly_waits, strict=True)
    ]
    return summary


def bar_chart(chart_id: str, title: str, hours: list[datetime], series: list[dict[str, float]],
              colours: dict[str, str], stacked: bool = True, unit: str = "") -> str:
    """One bar group per hour (stacked, or side by side), y axis scaled to the largest; every bar has a tooltip."""
    totals = [sum(values.values()) if stacked else max(values.values(), default=0) for values in series]
    top = max(totals + [0]) or 1
    slot = (CHART_WIDTH - MARGIN) / HOURS
    bars = []
    for index, (hour, values) in enumerate(zip(hours, series, strict=True)):
        bottom = CHART_HEIGHT
        width = (slot - 4) if stacked else (slot - 4) / max(len(values), 1)
        for position, (group, value) in enumerate(values.items()):
            if not value:
                continue
            height = value / top * (CHART_HEIGHT - 10)
            x = MARGIN + index * slot + 2 + (0 if stacked else position * width)
            y = (bottom - height) if stacked else CHART_HEIGHT - height
            bottom -= height if stacked else 0
            # format_html escapes its arguments into text, so numbers are formatted before they go in.
            bars.append((f"{x:.1f}", f"{y:.1f}", f"{width:.1f}", f"{height:.1f}", colours[group],
                         f"{hour:%H}:00 {group}: {value:g}{unit}"))
    labels = [(f"{MARGIN + index * slot + slot / 2:.1f}", CHART_HEIGHT + 4, f"{hour:%H}")
              for index, hour in enumerate(hours) if index % 3 == 0]
    return format_html(
        '<svg class="chart" id="{}" viewBox="0 {} {} {}" role="img" aria-labelledby="{}-title">'
        '<title id="{}-title">{}, last 24 hours (largest: {}{})</title>'
        '<text x="0" y="-4" class="axis">{}{}</text><line x1="{}" y1="{}" x2="{}" y2="{}" class="axis-line"/>'
        "{}{}</svg>",
        chart_id, -TOP_ROOM, CHART_WIDTH, TOP_ROOM + CHART_HEIGHT + BOTTOM_ROOM, chart_id, chart_id, title,
        f"{top:g}", unit, f"{top:g}", unit, MARGIN, CHART_HEIGHT, CHART_WIDTH, CHART_HEIGHT,
        format_html_join("", '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>', bars),
        format_html_join("", '<text x="{}" y="{}" class="axis" text-anchor="middle" dominant-baseline="hanging">{}'
                         "</text>", labels),
    )


def charts(summary: Summary) -> list[tuple[str, str, dict[str, str]]]:
    """(heading, svg, legend) for each chart on the page."""
    providers = sorted(summary.by_provider)
    provider_colours = {name: PROVIDER_COLOURS[index % len(PROVIDER_COLOURS)] for index, name in enumerate(providers)}
    per_provider = [{name: hour.get(name, 0) for name in providers} for hour in summary.provider_per_hour]
    latency = [{name: round(value, 3) for name, value in hour.items()} for hour in summary.latency_per_hour]
    return [
        ("Runs per hour by status",
         bar_chart("runs-chart", "Runs per hour by status", summary.hours, summary.per_hour, COLOURS), COLOURS),
        ("Runs per hour by provider",
         bar_chart("provider-chart", "Runs per hour by provider", summary.hours, per_provider, provider_colours),
         provider_colours),
        ("Run time and queue wait, p95 per hour",
         bar_chart("latency-chart", "Run time and queue wait p95 per hour", summary.hours, latency,
                   LATENCY_COLOURS, stacked=False, unit=" s"), LATENCY_COLOURS),
    ]


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
        "charts": charts(summary),
        "pools": pool_rows(),
        "active": active,
        "health": health,
        "error_rate": f"{summary.sandbox_error_rate:.1%}",
        "live_sessions": list(Session.objects.filter(status__in=LIVE_SESSION).select_related("caller")
                              .annotate(cell_count=Count("cells")).order_by("created_at")[:SESSION_ROWS]),
        "sessions_today": Session.objects.filter(created_at__gte=now - timedelta(hours=HOURS)).count(),
    }
    return render(request, "console/dashboard.html", context)
