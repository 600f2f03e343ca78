"""The operator console in headless Chromium: the activation guard (no stray Enter activates a failing provider),
no harm from clicks before the data arrives, a card switch racing a save, readable runs (folded output fetched
when unfolded, charts shown as pictures, downloads), lists that fit a 1366 px screen, the dashboard on real
rows, keyboard use and a 390 px screen without sideways scrolling."""

import base64
import json
import struct
import zlib
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from conftest import e2b_settings
from providers import config_store
from providers.models import WorkerHeartbeat
from sandboxctl.console.models import ProviderActivation
from sandboxctl.executions.models import Execution, Session


def png(width: int = 40, height: int = 20) -> bytes:
    """A real PNG (a red rectangle), as a chart the code drew would be."""
    row = b"\x00" + b"\xff\x00\x00" * width
    raw = zlib.compress(row * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def finished_run(**fields) -> Execution:
    now = timezone.now()
    defaults = {"provider": "self_managed", "language": "python", "code": "def main():\n    return 1",
                "code_sha256": "0" * 64, "status": "succeeded", "limits": {"timeout": 10}, "started_at": now,
                "finished_at": now, "execution_time": 0.25, "queue_wait": timedelta(milliseconds=12)}
    return Execution.objects.create(**{**defaults, **fields})


def live_session(**fields) -> Session:
    defaults = {"provider": "self_managed", "language": "python", "status": "active", "idle_timeout": 300,
                "max_lifetime": 3600, "worker": "sandboxctl@a-rather-long-worker-host-name.example#4242"}
    return Session.objects.create(**{**defaults, **fields})


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def overflowing(page) -> list[str]:
    """Boxes whose content is wider than they are, so that part of it needs sideways scrolling to be seen."""
    return page.evaluate("""[...document.querySelectorAll('#content-main *')]
        .filter((box) => { const style = getComputedStyle(box);
                           return /auto|scroll/.test(style.overflowX) && box.scrollWidth > box.clientWidth + 1; })
        .map((box) => `${box.tagName}.${box.className} ${box.scrollWidth} > ${box.clientWidth}`)""")


def refuse_activation(page, e2b_fake) -> None:
    """Ask to make e2b active with a key its service rejects, and wait for the refusal."""
    page.click(".card[data-provider=e2b]")
    page.wait_for_selector("#field-api_key")
    settings = e2b_settings(e2b_fake.url, api_key="e2b_wrong_key")
    for name in ("api_key", "api_url", "sandbox_url"):
        page.fill(f"#field-{name}", settings[name])
    page.check("#set-active")
    page.click("#save-button")
    expect(page.locator("#activation-guard")).to_be_visible()


# Activation guard.


def test_a_failing_provider_is_not_activated_without_an_explicit_choice(browser_page, e2b_fake):
    page = browser_page
    refuse_activation(page, e2b_fake)
    assert "rejected the credentials" in page.inner_text("#activation-reason")
    expect(page.locator("#test-raw-detail")).to_be_visible()
    assert "credentials rejected" in page.locator("#test-raw").text_content(), "raw detail behind a disclosure"
    assert page.inner_text("#test-message").startswith("Failed")
    assert config_store.active_name() == "self_managed" and not config_store.load("e2b"), "nothing changed"
    expect(page.locator("#fix-settings")).to_be_focused()
    expect(page.locator("#activate-anyway")).to_be_disabled()

    page.check("#confirm-anyway")
    page.click("#activate-anyway")
    expect(page.locator("#form-status")).to_have_text("Saved; this provider is now active.")
    assert config_store.active_name() == "e2b"
    record = ProviderActivation.objects.get()
    assert (record.provider, record.activated_by.username, record.forced, record.probe_success) == (
        "e2b", "admin", True, False)
    assert "rejected the credentials" in record.probe_message


def test_enter_after_a_refused_activation_does_not_activate(browser_page, e2b_fake):
    page = browser_page
    refuse_activation(page, e2b_fake)
    sent = []
    page.on("request", lambda request: sent.append(request.post_data) if request.method == "PUT" else None)
    page.keyboard.press("Enter")  # on the safe choice: back to the fields
    expect(page.locator("#field-api_key")).to_be_focused()
    page.keyboard.press("Enter")  # in a field: saves again, so the failing provider is tested again, and refused
    expect(page.locator("#fix-settings")).to_be_focused(timeout=30_000)
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # on the confirmation box: Enter does not tick it (it saves again)
    expect(page.locator("#fix-settings")).to_be_focused(timeout=30_000)
    expect(page.locator("#activate-anyway")).to_be_disabled()
    assert len(sent) == 2 and all(json.loads(body)["activate_anyway"] is False for body in sent), sent
    assert config_store.active_name() == "self_managed", "still the provider that works"
    assert not ProviderActivation.objects.exists()


def test_clicks_before_the_settings_arrive_do_nothing(signed_in_browser, live_server):
    page = signed_in_browser("/admin/", width=1366)
    errors, sent, held = [], [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: sent.append(request.method) if request.method != "GET" else None)
    page.route("**/api/v1/sandbox/config", lambda route: held.append(route))  # answered when the test says
    page.goto(f"{live_server.url}/admin/sandbox-settings/", wait_until="domcontentloaded")
    while not held:
        page.wait_for_timeout(50)
    for control in ("#test-button", "#save-button", "#set-active"):
        expect(page.locator(control)).to_be_disabled()
        page.click(control, force=True)  # a person clicks whatever is on screen
    page.evaluate("document.getElementById('provider-form').requestSubmit()")  # as Enter in the form would
    page.wait_for_timeout(300)
    assert (errors, sent) == ([], []), "nothing failed, and nothing was tested or saved"

    held[0].continue_()
    page.wait_for_selector("#deployment-rows [data-field=runtime]")
    expect(page.locator("#save-button")).to_be_enabled()
    expect(page.locator("#test-button")).to_be_enabled()
    expect(page.locator("#set-active")).to_be_checked()  # the stored state, not an early click's
    assert errors == [], errors


def test_a_healthy_provider_is_activated_with_its_probe_recorded(browser_page, e2b_fake):
    page = browser_page
    page.click(".card[data-provider=e2b]")
    page.wait_for_selector("#field-api_key")
    settings = e2b_settings(e2b_fake.url)
    for name in ("api_key", "api_url", "sandbox_url"):
        page.fill(f"#field-{name}", settings[name])
    page.check("#set-active")
    page.click("#save-button")
    expect(page.locator("#form-status")).to_have_text("Saved; this provider is now active.")
    assert ProviderActivation.objects.get().probe_success is True
    expect(page.locator(".card[data-provider=e2b] .badge")).to_have_text("active")


# The card and the form stay in step.


def test_a_save_racing_a_card_switch_never_sends_one_providers_fields_under_another(browser_page):
    page = browser_page
    page.click(".card[data-provider=aliyun_codeinterpreter]")
    page.wait_for_selector("#field-access_key_id")
    sent = []
    page.on("request", lambda request: sent.append(request) if request.method == "PUT" else None)
    # The e2b schema answers late: a save in that moment must still belong to the form on screen.
    page.route("**/api/v1/providers/e2b/schema", lambda route: (page.wait_for_timeout(1500), route.continue_()))
    page.click(".card[data-provider=e2b]")
    page.click("#save-button")
    page.wait_for_selector("#field-api_key")
    page.wait_for_timeout(300)
    for request in sent:
        body = json.loads(request.post_data)
        assert body["provider_type"] == "aliyun_codeinterpreter" and "access_key_id" in body["config"], body
    assert page.get_attribute("#provider-form", "data-provider") == "e2b"


def test_switching_cards_warns_before_dropping_unsaved_edits(browser_page):
    page = browser_page
    page.click(".card[data-provider=e2b]")
    page.wait_for_selector("#field-template")
    page.fill("#field-template", "my-own-template")
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click(".card[data-provider=aliyun_codeinterpreter]")
    page.wait_for_timeout(300)
    assert questions and "unsaved" in questions[0]
    assert page.input_value("#field-template") == "my-own-template", "the edits are kept"


# Keyboard, health reasons, errors tied to their inputs.


def test_keyboard_use_and_accessible_errors(browser_page):
    page = browser_page
    page.focus(".card[data-provider=self_managed]")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector(".card.selected[data-provider=aliyun_codeinterpreter]")
    assert page.evaluate("document.activeElement.dataset.provider") == "aliyun_codeinterpreter", "focus stays"
    assert page.get_attribute(".card[data-provider=aliyun_codeinterpreter]", "aria-pressed") == "true"
    assert page.inner_text(".card[data-provider=aliyun_codeinterpreter] .health") == "not configured"
    page.wait_for_selector("#field-access_key_id")  # the form follows once the provider's schema arrived
    assert page.locator("label[for=field-access_key_id] .required-mark").count() == 1
    page.click("#save-button")
    page.wait_for_selector("#field-access_key_id-errors li")
    assert page.get_attribute("#field-access_key_id", "aria-invalid") == "true"
    assert "field-access_key_id-errors" in page.get_attribute("#field-access_key_id", "aria-describedby")
    assert page.evaluate("document.activeElement.getAttribute('aria-invalid')") == "true", "focus on the first error"


def test_sidebar_links_and_favicon(browser_page, live_server):
    page = browser_page
    expect(page.locator("#nav-sidebar a", has_text="Sandbox settings")).to_have_count(1)
    expect(page.locator("#nav-sidebar a", has_text="Operations dashboard")).to_have_count(1)
    icon = page.request.get(f"{live_server.url}/favicon.ico")
    assert icon.ok and icon.headers["content-type"].startswith("image/svg")


# Readable runs.


def test_a_run_reads_well_with_its_chart_shown_and_long_output_folded(signed_in_browser, live_server):
    chart = png()
    run = finished_run(
        code="def main():\n    if True:\n        return 'indented'\n",
        stdout="".join(f"line {n}\n" for n in range(1000)),
        status="failed", error_code="value_error", error_message="ValueError: bad input",
        artifacts=[{"name": "chart.png", "mime_type": "image/png", "size": len(chart),
                    "content_b64": base64.b64encode(chart).decode()}],
    )
    page = signed_in_browser(f"/admin/executions/execution/{run.pk}/change/", width=1366)
    expect(page.locator(".run-banner")).to_contain_text("value_error — ValueError: bad input")
    expect(page.locator(".run-error")).to_contain_text("value_error ValueError: bad input")
    assert "        return" in page.inner_text(".run-code"), "indentation kept"
    assert page.evaluate("getComputedStyle(document.querySelector('.run-code')).fontFamily").find("mono") >= 0
    image = page.locator("img.run-artifact")
    expect(image).to_be_visible()
    assert page.evaluate("document.querySelector('img.run-artifact').naturalWidth") == 40
    # The chart starts where the code starts, not behind a column of labels.
    assert image.bounding_box()["x"] - page.locator(".run-code").bounding_box()["x"] < 2
    first = page.locator(".run-stdout .run-head").inner_text()
    assert first.count("\n") <= 300 and "line 299" in first and "line 300" not in first
    assert "line 999" not in page.content(), "the folded rest is not sent with the page"
    summary = page.locator(".run-stdout details summary")
    expect(summary).to_have_text("show all stdout (8.7\xa0KB)")
    summary.click()
    expect(page.locator(".run-stdout .run-whole")).to_contain_text("line 999")
    expect(page.locator(".run-stdout .run-head")).to_be_hidden()
    assert page.locator(".run-stdout .run-whole").inner_text().count("\n") >= 999
    download = page.request.get(live_server.url + page.locator(".run-artifacts a").get_attribute("href"))
    assert download.body() == chart and "attachment" in download.headers["content-disposition"]
    whole = page.request.get(live_server.url + page.locator(".run-download a").get_attribute("href"))
    assert whole.text().count("\n") == 1000
    # A read-only record: no delete button, no red cross for "not truncated", one mark for empty values.
    expect(page.locator(".deletelink")).to_have_count(0)
    expect(page.locator(".run-note")).to_have_count(0)
    assert page.locator("img[src*='icon-no']").count() == 0
    assert "-" not in page.locator(".readonly").all_inner_texts()


def test_the_history_lists_errors_and_finds_them(signed_in_browser):
    finished_run(status="sandbox_error", error_code="credentials_rejected", error_message="E2B: credentials rejected")
    finished_run()
    page = signed_in_browser("/admin/executions/execution/?q=credentials")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list td.field-outcome .run-status")).to_have_text("sandbox_error")
    expect(page.locator("#result_list td.field-outcome .run-sub")).to_have_text("credentials_rejected")
    assert page.get_attribute("#result_list td.field-outcome .run-sub", "title") == "E2B: credentials rejected"
    assert page.inner_text("#result_list td.field-timing") == "0.250 s\nwaited 0.012 s"
    page.click("#changelist-filter a:text-is('none')")  # the runs without an error, by a named link
    expect(page.locator("#result_list tbody tr")).to_have_count(0)


# Lists that fit a laptop's screen.


def fill_the_lists(user) -> None:
    """Rows as long as real ones get: a long account name, an error code, a long worker name, sessions."""
    for number in range(30):
        finished_run(caller=user, status="failed" if number % 3 else "succeeded",
                     error_code="result_not_serializable" if number % 3 else "", provider="aliyun_codeinterpreter")
    session = live_session(caller=user)
    finished_run(session=session, caller=user)
    live_session(caller=user, status="ended", end_reason="idle for 300 s: ended by the reaper on its host")


@pytest.mark.parametrize("path", ["/admin/executions/execution/", "/admin/executions/session/", "/admin/dashboard/"])
def test_lists_fit_a_1366px_screen_without_sideways_scrolling(signed_in_browser, django_user_model, path):
    fill_the_lists(django_user_model.objects.create_user("an-agent-with-a-long-account-name@example.com"))
    page = signed_in_browser(path, width=1366)
    assert no_sideways_scroll(page), page.evaluate("document.documentElement.scrollWidth")
    assert overflowing(page) == []
    if "dashboard" not in path:
        expect(page.locator("#result_list tbody tr").first).to_be_visible()
        assert page.locator("#changelist-filter").is_visible(), "the filters stay beside the list"


# The dashboard, on real rows.


def test_the_dashboard_draws_real_data(signed_in_browser):
    for _ in range(3):
        finished_run()
    finished_run(status="sandbox_error", error_code="worker_lost")
    finished_run(status="timeout", provider="e2b", execution_time=10.0)
    WorkerHeartbeat.objects.create(worker="sandboxctl@host#1234", host="host", pool_depth={"python": 2, "nodejs": 1},
                                   seen_at=timezone.now())
    page = signed_in_browser("/admin/dashboard/")
    expect(page.locator("#tile-runs .value")).to_have_text("5")
    expect(page.locator("#tile-errors .value")).to_have_text("20.0%")
    assert page.locator("#runs-chart rect").count() >= 3
    assert "sandbox error: 1" in page.inner_html("#runs-chart")
    assert "e2b: 1" in page.inner_html("#provider-chart") and "self_managed: 4" in page.inner_html("#provider-chart")
    assert "run time p95: 10 s" in page.inner_html("#latency-chart")
    expect(page.locator("#provider-table")).to_contain_text("e2b")
    expect(page.locator("#pool-table")).to_contain_text("sandboxctl@host#1234")


# A phone-sized screen.


@pytest.mark.parametrize("path", ["/admin/sandbox-settings/", "/admin/dashboard/", "run", "session",
                                  "/admin/executions/execution/", "/admin/executions/session/"])
def test_pages_fit_a_390px_screen(signed_in_browser, django_user_model, path):
    fill_the_lists(django_user_model.objects.create_user("an-agent-with-a-long-account-name@example.com"))
    if path == "run":
        path = f"/admin/executions/execution/{finished_run(stdout='x' * 5000).pk}/change/"
    if path == "session":
        path = f"/admin/executions/session/{Execution.objects.exclude(session=None).get().session_id}/change/"
    page = signed_in_browser(path, width=390)
    if "sandbox-settings" in path:
        page.wait_for_selector(".card[data-provider=self_managed]")
        page.click(".card[data-provider=e2b]")
        page.wait_for_selector("#field-api_key")
    assert no_sideways_scroll(page), page.evaluate("document.documentElement.scrollWidth")
