"""What egress costs: time to first byte through the proxy against direct, CPU per MB through it, and what a run
*without* egress pays for the mechanism being there (it must be nothing).

Run as root on a worker host (it drives runsc itself, with no stack running):

    .venv/bin/python bench/egress.py
    .venv/bin/python bench/egress.py --baseline /path/to/a/checkout/without/egress   # the last part, compared

1. From the host, on the loopback: a GET straight to an upstream on 127.0.0.3, and the same through a
   channel of the egress proxy (absolute form for http, CONNECT then TLS for https), p50 of N.
2. From inside a sandbox, as code sees it: the same GETs through the relay and the proxy.
3. CPU seconds per MB: 64 MB downloaded through the proxy; the proxy thread's CPU (from /proc), and the
   sandbox's own (its cgroup's processes: the Sentry, the relay, the client) for the in-sandbox download.
4. A trivial run without egress: sandbox start, and the run (job sent → report), p50 of N; with
   `--baseline`, the same measured on that checkout in alternating rounds (same host, same moment).
"""

import argparse
import atexit
import ipaddress
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TTFB_CODE = """
import socket, ssl, time
def first_byte(port, tls):
    started = time.perf_counter()
    s = socket.create_connection(('127.0.0.1', 3128))
    if tls:
        s.sendall(f'CONNECT upstream.test:{port} HTTP/1.1\\r\\nHost: upstream.test:{port}\\r\\n\\r\\n'.encode())
        answer = b''
        while not answer.endswith(b'\\r\\n\\r\\n'):
            answer += s.recv(1)
        context = ssl.create_default_context()
        s = context.wrap_socket(s, server_hostname='upstream.test')
        s.sendall(f'GET /small HTTP/1.1\\r\\nHost: upstream.test:{port}\\r\\n\\r\\n'.encode())
    else:
        url = f'http://upstream.test:{port}/small'
        s.sendall(f'GET {url} HTTP/1.1\\r\\nHost: upstream.test:{port}\\r\\n\\r\\n'.encode())
    s.recv(1)
    elapsed = time.perf_counter() - started
    s.close()
    return elapsed
def main(http_port, https_port, n):
    return {'http': [first_byte(http_port, False) for _ in range(n)],
            'https': [first_byte(https_port, True) for _ in range(n)]}
"""
DOWNLOAD_CODE = """
import requests
def main(url):
    total = 0
    with requests.get(url, stream=True, timeout=60) as response:
        for chunk in response.iter_content(1 << 16):
            total += len(chunk)
    return total
"""
MB = 1024 * 1024


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


def host_first_byte(connect, request: bytes, tls_name: str | None, context) -> float:
    started = time.perf_counter()
    sock = connect()
    if tls_name:
        sock = context.wrap_socket(sock, server_hostname=tls_name)
    sock.sendall(request)
    sock.recv(1)
    elapsed = time.perf_counter() - started
    sock.close()
    return elapsed


def through_proxy(path: Path, target: str, tls_name: str | None):
    def connect():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        if tls_name:
            sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"\r\n\r\n"):
                answer += sock.recv(1)
        return sock
    return connect


def thread_cpu(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sandbox_cpu(sandbox) -> float:
    ticks = 0
    for procs in Path("/sys/fs/cgroup/cpu/sandboxctl").glob(f"**/{sandbox.id}/cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure_proxy(n: int) -> dict:
    from executor.config import Limits
    from executor.egress_proxy import EgressProxy, ProxySettings
    from tests.egress_servers import TestCA, Upstream

    scratch = Path(tempfile.mkdtemp(prefix="egress-bench-"))
    ca = TestCA(scratch / "ca")
    https, http = Upstream(ca), Upstream()
    proxy = EgressProxy(ProxySettings(allowed_networks=(ipaddress.ip_network("127.0.0.3/32"),),
                                      hosts={"upstream.test": (ipaddress.ip_address("127.0.0.3"),)}))
    proxy.start()
    folder = scratch / "channel"
    folder.mkdir()
    channel = proxy.open(folder, ("upstream.test:*",), "bench")
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    small = b"GET /small HTTP/1.1\r\nHost: upstream.test\r\n\r\n"
    direct = lambda port: (lambda: socket.create_connection(("127.0.0.3", port)))  # noqa: E731
    results = {"host": {
        "http direct": p50([host_first_byte(direct(http.port), small, None, None) for _ in range(n)]),
        "http via proxy": p50([host_first_byte(through_proxy(channel.path, "", None),
                                               f"GET {http.url(path='/small')} HTTP/1.1\r\nHost: upstream.test:"
                                               f"{http.port}\r\n\r\n".encode(), None, None) for _ in range(n)]),
        "https direct": p50([host_first_byte(direct(https.port), small, "upstream.test", context) for _ in range(n)]),
        "https via proxy": p50([host_first_byte(through_proxy(channel.path, f"upstream.test:{https.port}",
                                                              "upstream.test"), small, "upstream.test", context)
                                for _ in range(n)]),
    }}
    # CPU per MB through the proxy, from the host (the proxy thread's CPU only).
    size = 64 * MB
    before = thread_cpu(proxy._thread.native_id)
    sock = through_proxy(channel.path, "", None)()
    sock.sendall(f"GET {http.url(path=f'/big?n={size}')} HTTP/1.1\r\nHost: upstream.test:{http.port}\r\n\r\n".encode())
    started, received = time.perf_counter(), 0
    while chunk := sock.recv(1 << 16):
        received += len(chunk)
    wall = time.perf_counter() - started
    results["proxy cpu s/MB (host client)"] = round((thread_cpu(proxy._thread.native_id) - before) / (received / MB), 5)
    results["proxy MB/s (host client)"] = round(received / MB / wall, 1)
    channel.close()

    backend, config = backend_here(scratch, ca.ca_file)
    sandbox = backend.make("python")
    sandbox.start()
    limits = Limits(timeout=120, egress=("upstream.test:*",))
    channel = proxy.open(sandbox.channel_dir, limits.egress, "bench")
    report = sandbox.run(TTFB_CODE, {"http_port": http.port, "https_port": https.port, "n": n}, limits)
    inside = json.loads(report.result["value_json"])
    results["sandbox"] = {"http via relay+proxy": p50(inside["http"]), "https via relay+proxy": p50(inside["https"])}
    channel.close()
    sandbox.destroy()
    sandbox = backend.make("python")
    sandbox.start()
    channel = proxy.open(sandbox.channel_dir, limits.egress, "bench")
    proxy_before, sandbox_before = thread_cpu(proxy._thread.native_id), sandbox_cpu(sandbox)
    started = time.perf_counter()
    report = sandbox.run(DOWNLOAD_CODE, {"url": http.url(path=f"/big?n={size}")}, limits)
    wall = time.perf_counter() - started
    sandbox_used, proxy_used = sandbox_cpu(sandbox) - sandbox_before, thread_cpu(proxy._thread.native_id) - proxy_before
    received = json.loads(report.result["value_json"])
    channel.close()
    sandbox.destroy()
    results["in-sandbox download"] = {
        "MB/s": round(received / MB / wall, 1), "proxy cpu s/MB": round(proxy_used / (received / MB), 5),
        "sandbox cpu s/MB (Sentry, relay, client)": round(sandbox_used / (received / MB), 5)}
    proxy.stop()
    https.stop()
    http.stop()
    return results


def backend_here(scratch: Path, ca_file: Path | None = None):
    from executor.config import SandboxConfig
    from executor.runsc_sandbox import RunscBackend

    state = Path(tempfile.mkdtemp(prefix="egress-bench-", dir="/run"))
    # prepare() keeps runsc's state on a tmpfs, mounting one there if needed: leave nothing behind.
    atexit.register(lambda: (subprocess.run(["umount", str(state)], capture_output=True),
                             shutil.rmtree(state, ignore_errors=True)))
    extra = {"egress_ca_bundle": ca_file} if ca_file else {}  # a baseline checkout has no such setting
    config = SandboxConfig(rootfs_dir=Path(os.environ.get("SANDBOX_ROOTFS_DIR", "/var/lib/sandboxctl/rootfs")),
                           runsc_root=state / "runsc", bundle_dir=state / "bundles", **extra)
    backend = RunscBackend(config, "egressbench", "bench")
    backend.prepare()
    return backend, config


def trivial(n: int) -> dict:
    """Run in a checkout's own interpreter (`--trivial`): sandbox start and a trivial run without egress."""
    from executor.config import Limits

    backend, _ = backend_here(Path(tempfile.mkdtemp()))
    starts, runs = [], []
    for _ in range(n):
        sandbox = backend.make("python")
        started = time.perf_counter()
        sandbox.start()
        starts.append(time.perf_counter() - started)
        started = time.perf_counter()
        report = sandbox.run("def main():\n    return 1", {}, Limits(timeout=10))
        runs.append(time.perf_counter() - started)
        assert report.result and report.result.get("ok"), report
        sandbox.destroy()
        time.sleep(0.2)
    return {"start": starts, "run": runs}


def compare(baseline: Path | None, rounds: int, n: int) -> dict:
    """Alternate this checkout and the baseline, `rounds` times `n` runs each, so both see the same host."""
    checkouts = {"this checkout": ROOT, **({"baseline": baseline} if baseline else {})}
    samples = {name: {"start": [], "run": []} for name in checkouts}
    for _ in range(rounds):
        for name, checkout in checkouts.items():
            rootfs = os.environ.get("SANDBOX_ROOTFS_DIR", "/var/lib/sandboxctl/rootfs") + (
                "-baseline" if name == "baseline" else "")
            done = subprocess.run([sys.executable, str(ROOT / "bench" / "egress.py"), "--trivial", str(n),
                                   "--code-root", str(checkout)], capture_output=True, text=True, check=True,
                                  env={**os.environ, "SANDBOX_ROOTFS_DIR": rootfs})
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            for key in ("start", "run"):
                samples[name][key] += measured[key]
    return {name: {f"{key} p50 ms": round(p50(values), 1) for key, values in measured.items()}
            for name, measured in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="a checkout without egress, for the trivial-run comparison")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--trivial", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--code-root", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.trivial:
        sys.path.insert(0, str(arguments.code_root))
        print(json.dumps(trivial(arguments.trivial)))
        return
    results = measure_proxy(arguments.requests)
    results["trivial run without egress"] = compare(arguments.baseline, arguments.rounds, arguments.runs)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
