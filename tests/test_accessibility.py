"""axe-core finds nothing serious or critical on the console's pages (dashboard, settings, the executions list, a
run, a session's notebook), filled with rows as real ones look, on a laptop and on a phone."""

import base64

import pytest
from django.utils import timezone

from providers.models import WorkerHeartbeat
from sandboxctl.executions.models import Execution
from tests.axe import blocking_findings
from tests.test_console import finished_run, live_session, png


@pytest.fixture
def pages(django_user_model) -> dict[str, str]:
    """Each page under test, by name, over rows of every kind: failed and long runs, a chart, a live session."""
    caller = django_user_model.objects.create_user("agent-with-a-long-name@example.com")
    chart = png()
    for status in ("succeeded", "failed", "timeout", "sandbox_error", "cancelled"):
        finished_run(caller=caller, status=status, error_code="" if status == "succeeded" else f"{status}_code",
                     error_message="" if status == "succeeded" else "what went wrong")
    long_run = finished_run(caller=caller, stdout="".join(f"line {n}\n" for n in range(1000)), stderr="warning\n",
                            artifacts=[{"name": "chart.png", "mime_type": "image/png", "size": len(chart),
                                        "content_b64": base64.b64encode(chart).decode()}])
    session = live_session(caller=caller)
    finished_run(session=session, caller=caller, code="total = 1\nprint(total)", stdout="1\n")
    finished_run(session=session, caller=caller, status="failed", code="print(missing)",
                 stderr="NameError: name 'missing' is not defined\n", error_code="name_error",
                 error_message="NameError: name 'missing' is not defined")
    Execution.objects.create(session=session, caller=caller, provider="self_managed", language="python",
                             code="import time\ntime.sleep(60)", status="running")
    WorkerHeartbeat.objects.create(worker="sandboxctl@host#1234", host="host", pool_depth={"python": 2, "nodejs": 1},
                                   seen_at=timezone.now())
    return {
        "dashboard": "/admin/dashboard/",
        "settings": "/admin/sandbox-settings/",
        "executions": "/admin/executions/execution/",
        "execution": f"/admin/executions/execution/{long_run.pk}/change/",
        "session": f"/admin/executions/session/{session.pk}/change/",
    }


@pytest.mark.parametrize("width", [1366, 390])
def test_no_serious_accessibility_findings(signed_in_browser, pages, width):
    findings = {}
    for name, path in pages.items():
        page = signed_in_browser(path, width=width)
        if name == "settings":
            page.wait_for_selector("#deployment-rows [data-field=runtime]")  # the form is drawn
        if name == "execution":
            page.click(".run-stdout details summary")  # the whole output, fetched and shown
            page.wait_for_selector(".run-stdout .run-whole:not([aria-busy])")
        findings[name] = blocking_findings(page)
    assert findings == {name: [] for name in pages}
