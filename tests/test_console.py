"""The operator console in headless Chromium: the activation guard, a card switch racing a save, readable
runs (folded output, charts shown as pictures, downloads), the dashboard on real rows, keyboard use and a
390 px screen without sideways scrolling."""

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
from sandboxctl.executions.models import Execution


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


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


# Activation guard.


def test_a_failing_provider_is_not_activated_without_an_explicit_choice(browser_page, e2b_fake):
    page = browser_page
    page.click(".card[data-provider=e2b]")
    page.wait_for_selector("#field-api_key")
    settings = e2b_settings(e2b_fake.url, api_key="e2b_wrong_key")
    page.fill("#field-api_key", settings["api_key"])
    page.fill("#field-api_url", settings["api_url"])
    page.fill("#field-sandbox_url", settings["sandbox_url"])
    page.check("#set-active")
    page.click("#save-button")
    expect(page.locator("#activation-guard")).to_be_visible()
    assert "rejected the credentials" in page.inner_text("#activation-reason")
    expect(page.locator("#test-raw-detail")).to_be_visible()
    assert "credentials rejected" in page.locator("#test-raw").text_content(), "raw detail behind a disclosure"
    assert page.inner_text("#test-message").startswith("Failed")
    assert config_store.active_name() == "self_managed" and not config_store.load("e2b"), "nothing changed"
    expect(page.locator("#activate-anyway")).to_be_focused()

    page.click("#activate-anyway")
    expect(page.locator("#form-status")).to_have_text("Saved; this provider is now active.")
    assert config_store.active_name() == "e2b"
    record = ProviderActivation.objects.get()
    assert (record.provider, record.activated_by.username, record.forced, record.probe_success) == (
        "e2b", "admin", True, False)
    assert "rejected the credentials" in record.probe_message


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
    page = signed_in_browser(f"/admin/executions/execution/{run.pk}/change/")
    expect(page.locator(".run-banner")).to_contain_text("value_error — ValueError: bad input")
    assert "        return" in page.inner_text(".run-code"), "indentation kept"
    assert page.evaluate("getComputedStyle(document.querySelector('.run-code pre')).fontFamily").find("mono") >= 0
    image = page.locator("img.run-artifact")
    expect(image).to_be_visible()
    assert page.evaluate("document.querySelector('img.run-artifact').naturalWidth") == 40
    first = page.locator(".field-stdout_view pre").first.inner_text()
    assert first.count("\n") <= 300 and "line 299" in first and "line 300" not in first
    expect(page.locator(".field-stdout_view details summary")).to_have_text("show all (700 more lines)")
    download = page.request.get(live_server.url + page.locator(".run-artifacts a").get_attribute("href"))
    assert download.body() == chart and "attachment" in download.headers["content-disposition"]
    whole = page.request.get(live_server.url + page.locator(".field-stdout_view a[download]").get_attribute("href"))
    assert whole.text().count("\n") == 1000


def test_the_history_lists_errors_and_finds_them(signed_in_browser):
    finished_run(status="sandbox_error", error_code="credentials_rejected", error_message="E2B: credentials rejected")
    finished_run()
    page = signed_in_browser("/admin/executions/execution/?q=credentials")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list td.field-error")).to_have_text("credentials_rejected")
    assert page.inner_text("#result_list td.field-duration") == "0.250 s"
    assert page.inner_text("#result_list td.field-waited") == "0.012 s"


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


@pytest.mark.parametrize("path", ["/admin/sandbox-settings/", "/admin/dashboard/", "run"])
def test_pages_fit_a_390px_screen(signed_in_browser, path):
    if path == "run":
        path = f"/admin/executions/execution/{finished_run(stdout='x' * 5000).pk}/change/"
    page = signed_in_browser(path, width=390)
    if "sandbox-settings" in path:
        page.wait_for_selector(".card[data-provider=self_managed]")
        page.click(".card[data-provider=e2b]")
        page.wait_for_selector("#field-api_key")
    assert no_sideways_scroll(page), page.evaluate("document.documentElement.scrollWidth")
