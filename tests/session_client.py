"""A session through the real API, as the stack tests and the attack tests drive it."""

import time

from executor.runsc_sandbox import RunscBackend
from sandboxctl.worker.pool import sandbox_config


def open_session(api, language: str = "python", **fields) -> dict:
    response = api.post("/api/v1/sessions", json={"language": language, **fields})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "active"
    return body


def cell(api, session: dict, code: str, expected: int = 200, **fields) -> dict:
    response = api.post(f"/api/v1/sessions/{session['id']}/executions", json={"code": code, **fields})
    assert response.status_code == expected, response.text
    return response.json()


def close(api, session: dict) -> None:
    assert api.request("DELETE", f"/api/v1/sessions/{session['id']}").status_code == 204


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def sandbox_alive(sandbox_id: str) -> bool:
    """Whether the sandbox is on this host, as a sweep would find it (the site is the worker's, named in the id)."""
    backend = RunscBackend(sandbox_config(), sandbox_id.split(".")[1], "observer")
    return sandbox_id in {found.id for found in backend.find()}
