"""Callback delivery to a real local HTTP receiver, with retries and the state recorded on the row."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sandboxctl.executions.models import Execution


class Receiver:
    def __init__(self, fail_times: int = 0) -> None:
        self.bodies: list[dict] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.attempts <= fail_times:
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver():
    made = []

    def make(fail_times: int = 0) -> Receiver:
        made.append(Receiver(fail_times))
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
