"""How many waiting requests one web process holds, and what they cost it.

Run by hand against a web server started with ONE worker process, for example:

    gunicorn sandboxctl.asgi -k sandboxctl.api.server.Worker --workers 1 --bind 127.0.0.1:8000
    SANDBOXCTL_URL=http://127.0.0.1:8000 SANDBOXCTL_TOKEN=... .venv/bin/python bench/waiters.py --waiters 2000

It submits one run that sleeps (`--sleep`), then opens `--waiters` connections, each a `wait=true` replay of
that run (same Idempotency-Key: one run, many waiting requests, no quota in the way), spread over loopback
source addresses so the per-address cap is not what is measured. While they all wait it times `/healthz`,
and reads the web process's resident memory and thread count from /proc; then it reads every answer.
It sends `--batch` requests a second, so it measures what the process holds, not how fast it takes
requests in (it prints that rate too). The server needs a request rate above `--waiters`
(SANDBOX_TENANT_RATE) and the default connection caps or higher.
"""

import argparse
import json
import os
import re
import selectors
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import requests

PER_ADDRESS = 400


def process_of_port(port: int) -> int:
    """The pid whose socket listens on `port` (the single web worker shares it with gunicorn's arbiter: the
    arbiter's child is the one that serves)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inode = fields[9]
    owners = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]" for fd in os.listdir(f"/proc/{pid}/fd")):
                owners.append(int(pid))
        except OSError:
            continue
    children = [pid for pid in owners if int(Path(f"/proc/{pid}/stat").read_text().split()[3]) in owners]
    return (children or owners)[0]


def status_of(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"])}


def waiting_requests(url: str) -> int:
    text = requests.get(f"{url}/metrics", timeout=30).text
    return int(re.search(r"^sandboxctl_web_waiting_requests{[^}]*} (\d+)$", text, re.MULTILINE).group(1))


def request_bytes(host: str, port: int, token: str, key: str, code: str) -> bytes:
    body = json.dumps({"language": "python", "code": code, "wait": True, "timeout": 60}).encode()
    return (f"POST /api/v1/executions HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--sleep", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=50, help="requests sent per second")
    args = parser.parse_args()
    url, token = os.environ["SANDBOXCTL_URL"], os.environ["SANDBOXCTL_TOKEN"]
    host, port = urlsplit(url).hostname, urlsplit(url).port
    pid = process_of_port(port)
    before = status_of(pid)
    key, code = f"bench-{uuid.uuid4().hex}", f"import time\ndef main():\n    time.sleep({args.sleep})\n    return 1"
    body = {"language": "python", "code": code, "timeout": 60, "wait": False}
    first = requests.post(f"{url}/api/v1/executions", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})
    assert first.status_code == 202, first.text
    payload = request_bytes(host, port, token, key, code)
    selector, opened = selectors.DefaultSelector(), time.monotonic()
    for number in range(args.waiters):
        conn = socket.socket()
        conn.bind((f"127.0.{10 + number // PER_ADDRESS // 250}.{1 + number // PER_ADDRESS % 250}", 0))
        conn.connect((host, port))
        conn.sendall(payload)
        conn.setblocking(False)
        if number % args.batch == args.batch - 1:
            time.sleep(1)  # at a pace the process takes them in: the accept queue is not what is measured
        selector.register(conn, selectors.EVENT_READ, bytearray())
    print(f"{args.waiters} waiting requests sent in {time.monotonic() - opened:.1f}s")
    while (waiting := waiting_requests(url)) < args.waiters and time.monotonic() - opened < args.sleep - 10:
        time.sleep(0.5)
    print(f"{waiting} waiting after {time.monotonic() - opened:.1f}s (the process took them in at "
          f"{waiting / (time.monotonic() - opened):.0f} requests/s)")
    health = []
    for _ in range(10):
        started = time.monotonic()
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        health.append(time.monotonic() - started)
        time.sleep(0.2)
    during = status_of(pid)
    answers, deadline = [], time.monotonic() + args.sleep + 60
    while selector.get_map() and time.monotonic() < deadline:
        for key_, _ in selector.select(timeout=1):
            chunk = key_.fileobj.recv(65536)
            if chunk:
                key_.data.extend(chunk)
                continue
            selector.unregister(key_.fileobj)
            key_.fileobj.close()
            answers.append(bytes(key_.data).split(b" ", 2)[1:2])
    ok = sum(1 for answer in answers if answer == [b"200"])
    print(f"web process {pid}: before {before['rss_mb']:.0f} MB, {before['threads']} threads; "
          f"while {args.waiters} wait: {during['rss_mb']:.0f} MB, {during['threads']} threads "
          f"({(during['rss_mb'] - before['rss_mb']) * 1024 / args.waiters:.1f} KB per waiting request)")
    print(f"/healthz while they wait: median {statistics.median(health) * 1000:.1f} ms, "
          f"max {max(health) * 1000:.1f} ms")
    print(f"answers: {ok} × 200 of {args.waiters}; {len(selector.get_map())} unanswered")
    sys.exit(0 if ok == args.waiters else 1)


if __name__ == "__main__":
    main()
