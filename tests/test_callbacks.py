"""Callbacks: the final body is POSTed once per terminal transition, whoever ends the run, with retries and
backoff recorded on the row — and never to a private address, by literal, by name or by redirect."""

import ipaddress
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command

from conftest import CALLBACK_TEST_NETWORK
from providers.base import Status
from sandboxctl.executions.models import Execution


class Receiver:
    """A real HTTP receiver counting what arrives; `answer` is the status it replies with after `fail_times`."""

    def __init__(self, host: str = "127.0.0.2", fail_times: int = 0, redirect_to: str = "") -> None:
        self.bodies: list[dict] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                elif receiver.attempts <= fail_times:
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{host}:{self.server.server_address[1]}/hook"
        self.port = self.server.server_address[1]


@pytest.fixture
def receiver(settings):
    # The web side validates callback URLs too; the worker was started with the same allowed network.
    settings.SANDBOX_CALLBACK_ALLOWED_NETWORKS = [ipaddress.ip_network(CALLBACK_TEST_NETWORK)]
    made = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for item in made:
        item.server.shutdown()


def wait_for_callback(execution_id: str, state: str, timeout: float = 30) -> Execution:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = Execution.objects.get(pk=execution_id)
        if row.callback_status == state:
            return row
        time.sleep(0.1)
    raise AssertionError(f"callback still {row.callback_status!r}, wanted {state!r}")


def test_final_body_is_posted_to_the_callback(api, receiver):
    hook = receiver()
    body = api.run("def main():\n    return 'called back'", callback_url=hook.url)
    row = wait_for_callback(body["id"], "delivered")
    assert row.callback_attempts == 1
    assert hook.bodies[0]["id"] == body["id"]
    assert hook.bodies[0]["status"] == "succeeded"
    assert hook.bodies[0]["result"]["value"] == "called back"


def test_failed_deliveries_are_retried_with_backoff(api, receiver):
    hook = receiver(fail_times=2)
    body = api.run("def main():\n    return 1", callback_url=hook.url)
    row = wait_for_callback(body["id"], "delivered")
    assert row.callback_attempts == 3
    assert len(hook.bodies) == 1


def test_delivery_gives_up_after_three_tries(api, receiver):
    hook = receiver(fail_times=10)
    body = api.run("def main():\n    return 1", callback_url=hook.url)
    row = wait_for_callback(body["id"], "failed")
    assert row.callback_attempts == 3
    assert "500" in row.callback_error
    assert hook.attempts == 3


def test_a_cancelled_running_run_is_called_back_once(api, receiver):
    hook = receiver()
    response = api.post("/api/v1/executions", json={
        "language": "python", "code": "import time\ndef main():\n    time.sleep(20)", "wait": False,
        "callback_url": hook.url,
    })
    execution_id = response.json()["id"]
    deadline = time.monotonic() + 20
    while Execution.objects.get(pk=execution_id).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert api.post(f"/api/v1/executions/{execution_id}/cancel").status_code == 200
    wait_for_callback(execution_id, "delivered")
    time.sleep(2)  # the worker's own, losing, end of the run must not send a second one
    assert [body["status"] for body in hook.bodies] == ["cancelled"]
    assert hook.attempts == 1


def test_a_run_ended_by_the_reconciler_is_called_back(api, receiver, user, settings):
    hook = receiver()
    settings.SANDBOX_QUEUE_TTL = 1
    execution = Execution.objects.create(
        provider="self_managed", language="python", code="x = 1", code_sha256="0" * 64, caller=user,
        limits={"timeout": 1, "memory_mb": 64, "output_limit": 10}, callback_url=hook.url, queue="nowhere",
    )
    Execution.objects.filter(pk=execution.pk).update(created_at=execution.created_at.replace(year=2020))
    call_command("reconcile_executions")
    row = wait_for_callback(execution.pk, "delivered")
    assert (row.status, row.error_code) == ("sandbox_error", "queue_expired")
    assert [body["error"]["code"] for body in hook.bodies] == ["queue_expired"]


def test_a_callback_whose_task_was_lost_is_sent_by_the_reconciler(api, receiver, user):
    hook = receiver()
    execution = Execution.objects.create(
        provider="self_managed", language="python", code="x = 1", code_sha256="0" * 64, caller=user,
        limits={"timeout": 1, "memory_mb": 64, "output_limit": 10}, callback_url=hook.url,
    )
    # As when the broker was down at the moment the run ended: the row owes a callback nobody queued.
    ended = execution.created_at.replace(year=2020)
    Execution.objects.filter(pk=execution.pk).update(
        status=Status.FAILED, finished_at=ended, callback_status="pending", callback_due_at=ended
    )
    call_command("reconcile_executions")
    wait_for_callback(execution.pk, "delivered")
    assert len(hook.bodies) == 1


FORBIDDEN = ["http://127.0.0.1:6379/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:8000/",
             "http://[::ffff:127.0.0.1]/", "http://10.1.2.3/", "http://192.168.0.1/", "http://[fe80::1]/",
             "http://[fc00::1]/", "http://0.0.0.0:8000/", "http://224.0.0.1/", "http://100.64.0.1/",
             "http://[2002:7f00:1::]/"]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_literal_private_addresses_are_refused_at_submit(api, url):
    response = api.post("/api/v1/executions", json={"language": "python", "code": "x = 1", "callback_url": url})
    assert response.status_code == 400
    assert "callback_url" in response.json()
    assert "not a public address" in response.json()["callback_url"][0]


@pytest.fixture
def loopback_listener():
    """A listener on 127.0.0.1, the address an SSRF would aim for; it must never be reached."""
    hook = Receiver(host="127.0.0.1")
    yield hook
    hook.server.shutdown()


def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(api, receiver, loopback_listener):
    body = api.run("def main():\n    return 1", callback_url=f"http://localhost:{loopback_listener.port}/x")
    row = wait_for_callback(body["id"], "refused")
    assert "not a public address" in row.callback_error
    assert row.callback_attempts == 1, "a refusal is final: no retries"
    assert loopback_listener.attempts == 0


def test_redirects_are_not_followed(api, receiver, loopback_listener):
    hook = receiver(redirect_to=loopback_listener.url)
    body = api.run("def main():\n    return 1", callback_url=hook.url)
    row = wait_for_callback(body["id"], "failed", timeout=40)
    assert "redirects are not followed" in row.callback_error
    assert loopback_listener.attempts == 0
