"""A small Python client for the sandboxctl API.

    from sandboxctl.client import execute_code
    result = execute_code("def main(x):\\n    return x * 2", arguments={"x": 21},
                          base_url="http://localhost:8000", token="sbx_…")
    result.metadata["result"]  # {"present": True, "value": 42}
"""

import os
from dataclasses import dataclass, field

import requests


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None
    execution_time: float | None
    metadata: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.metadata.get("status") == "succeeded"


class SandboxctlError(Exception):
    """The API refused the request (bad input, auth) or could not be reached."""

    def __init__(self, message: str, status_code: int | None = None, body: dict | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body or {}


def execute_code(
    code: str,
    language: str = "python",
    timeout: float = 30,
    arguments: dict | None = None,
    base_url: str | None = None,
    token: str | None = None,
    memory_mb: int | None = None,
) -> RunResult:
    """Run `code` (calling its `main(**arguments)`) and wait for the result."""
    base_url = (base_url or os.environ.get("SANDBOXCTL_URL", "http://localhost:8000")).rstrip("/")
    token = token or os.environ.get("SANDBOXCTL_TOKEN", "")
    body = {"language": language, "code": code, "arguments": arguments or {}, "timeout": timeout, "wait": True}
    if memory_mb is not None:
        body["memory_mb"] = memory_mb
    try:
        response = requests.post(
            f"{base_url}/api/v1/executions", json=body, headers={"Authorization": f"Bearer {token}"},
            timeout=timeout + 120,
        )
    except requests.RequestException as exc:
        raise SandboxctlError(f"cannot reach sandboxctl at {base_url}: {exc}") from exc
    payload = _json(response)
    if response.status_code >= 400 and response.status_code != 503:
        raise SandboxctlError(f"sandboxctl refused the request: {payload}", response.status_code, payload)
    metadata = {key: value for key, value in payload.items() if key not in ("stdout", "stderr", "exit_code")}
    return RunResult(
        stdout=payload.get("stdout", ""),
        stderr=payload.get("stderr", ""),
        exit_code=payload.get("exit_code"),
        execution_time=payload.get("execution_time"),
        metadata=metadata,
    )


def _json(response: requests.Response) -> dict:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500]}
