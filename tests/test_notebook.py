"""A session read as a notebook in headless Chromium, driven through the real API and worker: every cell in order
with its output, its error (a NameError is there to see) and the chart it drew; cells run while the page is open
appear without a reload; a cell's page links back to its place in the notebook."""

import pytest
from playwright.sync_api import expect

from tests.session_client import cell, close, open_session

pytestmark = pytest.mark.django_db(transaction=True)

CHART = ("import matplotlib.pyplot as plt\n"
         "plt.plot([1, 2, 3], [1, 4, 9])\n"
         "plt.title('squares')\n"
         "plt.savefig('artifacts/squares.png')\n"
         "print('drew squares')")


def test_the_notebook_shows_every_cell_with_its_error_and_chart_and_fills_in_live(api, signed_in_browser):
    session = open_session(api)
    try:
        drawn = cell(api, session, CHART)
        assert drawn["status"] == "succeeded", drawn
        failed = cell(api, session, "print('before')\nprint(undefined_name)")
        assert failed["status"] == "failed" and failed["error"]["code"] == "name_error", failed

        page = signed_in_browser(f"/admin/executions/session/{session['id']}/change/", width=1366)
        expect(page.locator(".run-cell")).to_have_count(2)
        first, second = page.locator("#cell-1"), page.locator("#cell-2")
        expect(first.locator(".run-code")).to_contain_text("plt.savefig('artifacts/squares.png')")
        expect(first.locator(".run-code .n").first).to_be_visible()  # highlighted: names are coloured spans
        expect(first.locator(".run-stdout")).to_contain_text("drew squares")
        chart = first.locator("img.run-artifact")
        expect(chart).to_have_attribute("alt", "squares.png")
        assert chart.evaluate("image => image.complete && image.naturalWidth") > 100, "the chart is drawn"
        expect(second.locator(".run-error")).to_contain_text("name_error")
        expect(second.locator(".run-error")).to_contain_text("NameError")
        expect(second.locator(".run-stderr")).to_contain_text("undefined_name")
        expect(second.locator(".run-stdout")).to_have_text("stdout before")
        assert page.locator("#notebook").get_attribute("data-live") == "true"

        # A cell run while the page is open appears without a reload, with its result.
        page.evaluate("window.notReloaded = true")
        answer = cell(api, session, "def main():\n    return {'answer': 6 * 7}")
        assert answer["status"] == "succeeded", answer
        expect(page.locator("#cell-3")).to_contain_text('"answer": 42', timeout=20_000)
        expect(page.locator("#cell-count")).to_have_text("3")
        assert page.evaluate("window.notReloaded") is True

        # Its page says where it stands, and links back to that place in the notebook.
        run = signed_in_browser(f"/admin/executions/execution/{failed['id']}/change/", width=1366)
        place = run.locator(".run-place a")
        expect(place).to_have_text(f"Cell 2 of session {session['id'][:8]}")
        place.click()
        page_url = run.url
        assert page_url.endswith(f"/admin/executions/session/{session['id']}/change/#cell-2"), page_url
        expect(run.locator("#cell-2 .run-error")).to_contain_text("NameError")
    finally:
        close(api, session)

    # Once the session has ended the page says so, and stops asking.
    expect(page.locator("#session-status")).to_have_text("ended", timeout=20_000)
    expect(page.locator("#notebook-status")).to_contain_text("no more cells will come")


def test_a_cell_is_shown_running_then_replaced_by_its_outcome(api, signed_in_browser):
    session = open_session(api)
    try:
        cell(api, session, "total = 1")
        page = signed_in_browser(f"/admin/executions/session/{session['id']}/change/", width=1366)
        expect(page.locator("#cell-1")).to_have_attribute("data-terminal", "true")
        # Long enough that the page, asking every 2 s, sees it before it ends.
        started = cell(api, session, "import time\ntime.sleep(6)\nprint('woke up', total)", expected=202,
                       wait=False)
        expect(page.locator("#cell-2 .run-pending")).to_be_visible(timeout=20_000)
        expect(page.locator("#cell-2")).to_have_attribute("data-terminal", "true", timeout=30_000)
        expect(page.locator("#cell-2 .run-stdout")).to_contain_text("woke up 1")
        expect(page.locator("#cell-2 .run-pending")).to_have_count(0)
        assert api.get(f"/api/v1/executions/{started['id']}").json()["status"] == "succeeded"
    finally:
        close(api, session)
