"""The admin settings page in a real headless Chromium: switch provider, validation errors, test, save, reload."""

from playwright.sync_api import expect

from conftest import e2b_settings
from providers import config_store


def select_provider(page, name: str) -> None:
    page.click(f".card[data-provider={name}]")
    page.wait_for_selector(f".card.selected[data-provider={name}]")
    page.wait_for_selector(f"#provider-form[data-provider={name}]:not([aria-busy])")


def test_configure_test_and_activate_e2b(browser_page, e2b_fake, api):
    page = browser_page
    assert page.locator(".card").count() == 3
    assert page.locator(".card[data-provider=self_managed] .badge").inner_text() == "active"

    select_provider(page, "e2b")
    page.wait_for_selector("#field-api_key")
    assert page.get_attribute("#field-api_key", "type") == "password"
    assert page.get_attribute("#field-timeout", "type") == "number"
    assert page.get_attribute("#field-timeout", "max") == "3600"

    page.fill("#field-timeout", "0")
    page.click("#save-button")
    page.wait_for_selector("#field-api_key-errors li")
    assert page.inner_text("#field-api_key-errors") == "is required"
    assert page.inner_text("#field-timeout-errors") == "must be ≥ 1"
    assert not config_store.load("e2b")

    settings = e2b_settings(e2b_fake.url)
    page.fill("#field-api_key", settings["api_key"])
    page.fill("#field-timeout", "30")
    page.fill("#field-api_url", settings["api_url"])
    page.fill("#field-sandbox_url", settings["sandbox_url"])
    page.click("#test-button")
    page.wait_for_selector("#test-result:not([hidden])")
    assert page.inner_text("#test-message").startswith("Success")
    assert page.inner_text("#test-exit-code") == "0"
    assert page.inner_text("#test-stdout").strip() == "sandboxctl probe"
    assert not config_store.load("e2b"), "Test connection saves nothing"

    page.check("#set-active")
    page.click("#save-button")
    expect(page.locator("#form-status")).to_have_text("Saved; this provider is now active.")
    assert config_store.active_name() == "e2b"

    page.reload()
    page.wait_for_selector(".card.selected[data-provider=e2b]")
    assert page.locator(".card[data-provider=e2b] .badge").inner_text() == "active"
    assert page.input_value("#field-api_key") == ""
    assert page.get_attribute("#field-api_key", "placeholder") == "••••0001 (leave blank to keep)"
    assert settings["api_key"] not in page.content()
    assert page.input_value("#field-api_url") == e2b_fake.url

    # The very next execution runs on the provider just activated in the page, with no restart.
    body = api.run("def main(x):\n    return x", arguments={"x": 7})
    assert (body["provider"], body["result"]["value"]) == ("e2b", 7)


def test_probe_the_real_self_managed_pool(browser_page, sandbox_worker):
    page = browser_page
    select_provider(page, "self_managed")
    page.wait_for_selector("#deployment-rows [data-field=runtime]")
    assert page.inner_text("#deployment-rows [data-field=runtime]") == "runsc"
    page.click("#test-button")
    page.wait_for_selector("#test-result:not([hidden])", timeout=60_000)
    assert page.inner_text("#test-message").startswith("Success")
    assert page.inner_text("#test-stdout").strip() == "sandboxctl probe"


def test_bad_aliyun_settings_show_errors_next_to_fields(browser_page):
    page = browser_page
    select_provider(page, "aliyun_codeinterpreter")
    page.wait_for_selector("#field-region")
    assert page.locator("#field-region option").count() == 5
    page.fill("#field-timeout", "31")
    page.click("#save-button")
    page.wait_for_selector("#field-timeout-errors li")
    assert page.inner_text("#field-timeout-errors") == "must be ≤ 30"
    assert page.inner_text("#field-access_key_secret-errors") == "is required"
