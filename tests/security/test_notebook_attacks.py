"""A session's notebook shows other accounts' code and output: only staff read it, through the page or its live
endpoint, and nothing a run wrote is ever markup there, not even in the cells the page adds live."""

import pytest
import requests
from django.test import Client
from playwright.sync_api import expect

from sandboxctl.executions.models import Execution
from tests.test_console import finished_run, live_session

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = '<img src="x" onerror="window.pwned = (window.pwned || 0) + 1"><script>window.pwned = 99</script>'


def cells_url(session) -> str:
    return f"/admin/executions/session/{session.pk}/cells/"


def test_only_staff_read_a_notebook_or_its_cells(live_server, user, token, staff_user):
    session = live_session(caller=user)
    finished_run(session=session, caller=user, stdout="zz-private-output\n")
    paths = [cells_url(session), f"/admin/executions/session/{session.pk}/change/"]
    for path in paths:
        # No one signed in, and the account's own API token: the admin knows neither.
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            response = requests.get(live_server.url + path, headers=headers, allow_redirects=False, timeout=30)
            assert response.status_code == 302 and "/admin/login/" in response.headers["Location"], path
            assert "zz-private-output" not in response.text
        # The account itself, signed in with its password, is not staff.
        owner = Client()
        owner.force_login(user)
        response = owner.get(path)
        assert response.status_code == 302 and "zz-private-output" not in response.content.decode(), path
    staff = Client()
    staff.force_login(staff_user)
    assert "zz-private-output" in staff.get(cells_url(session)).json()["cells"][0]["html"]


@pytest.mark.parametrize("after", ["-1", "1.5", "x", "9" * 30, ""])
def test_a_bad_position_is_a_400_naming_it(staff_user, after):
    session = live_session()
    staff = Client()
    staff.force_login(staff_user)
    response = staff.get(cells_url(session), {"after": after})
    assert response.status_code == 400 and "after" in response.json(), after


def test_an_unknown_session_is_a_404(staff_user):
    staff = Client()
    staff.force_login(staff_user)
    assert staff.get("/admin/executions/session/00000000-0000-0000-0000-000000000000/cells/").status_code == 404


def test_what_a_run_wrote_stays_text_in_the_notebook_drawn_or_added_live(signed_in_browser, user):
    session = live_session(caller=user)
    hostile = {"code": PAYLOAD, "stdout": PAYLOAD, "stderr": PAYLOAD, "error_code": "value_error",
               "error_message": PAYLOAD, "arguments": {"x": PAYLOAD}, "result_present": True, "result": PAYLOAD,
               "artifacts": [{"name": PAYLOAD, "mime_type": "text/html", "size": 1, "content_b64": "eA=="}]}
    finished_run(session=session, caller=user, **hostile)
    page = signed_in_browser(f"/admin/executions/session/{session.pk}/change/", width=1366)
    expect(page.locator("#cell-1 .run-stdout")).to_contain_text("<script>window.pwned = 99</script>")
    finished_run(session=session, caller=user, **hostile)  # drawn by the page itself, from the live endpoint
    expect(page.locator("#cell-2 .run-error")).to_contain_text('onerror="window.pwned', timeout=20_000)
    page.wait_for_timeout(500)  # an injected image would have failed to load and run its handler by now
    assert page.evaluate("window.pwned") is None
    assert page.locator("#notebook img").count() == 0 and page.locator("#notebook script").count() == 0
    assert Execution.objects.filter(session=session).count() == 2
