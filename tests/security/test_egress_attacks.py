"""Attacks on egress from inside a sandbox, through its relay, against the worker's real proxy.

The attacking account's ceiling and request allow every name (`*:*`), so the proxy's address rules, its
server-name and Host checks and the per-sandbox channels are all that stand between the code and the host's
loopback, the LAN and the metadata service. Upstreams listen on 127.0.0.3 only (tests/egress_servers.py);
canaries on 127.0.0.1 and ::1 count every connection that reaches them.
"""

import socket
import threading
import time

import pytest

from conftest import Api
from sandboxctl.egress import policy
from sandboxctl.executions.models import ApiToken
from tests.egress_servers import Upstream
from tests.session_client import cell, close, open_session, wait_until

EVERYWHERE = {"allow": ["*:*"]}
ASK = (
    "import socket\n"
    "def ask(request):\n"
    "    s = socket.create_connection(('127.0.0.1', 3128), timeout=10)\n"
    "    s.sendall(request.encode())\n"
    "    data = b''\n"
    "    while b'\\r\\n' not in data:\n"
    "        chunk = s.recv(4096)\n"
    "        if not chunk:\n"
    "            break\n"
    "        data += chunk\n"
    "    s.close()\n"
    "    return data.split(b'\\r\\n', 1)[0].decode()\n"
)


@pytest.fixture
def canaries():
    """Listeners on the host's IPv4 and IPv6 loopback, counting what reaches them."""
    accepted: list = []
    servers = []
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind((address, 0))
        server.listen(16)
        server.settimeout(0.2)
        servers.append(server)
    stop = threading.Event()

    def watch(server) -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    threads = [threading.Thread(target=watch, args=(server,), daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    yield servers[0].getsockname()[1], servers[1].getsockname()[1], accepted
    stop.set()
    for thread in threads:
        thread.join()
    for server in servers:
        server.close()


@pytest.fixture
def attacker(api, user):
    policy.set_ceiling(user, ["*:*"])
    return api


@pytest.fixture
def https_upstream(egress_ca):
    server = Upstream(egress_ca)
    yield server
    server.stop()


@pytest.fixture
def http_upstream():
    server = Upstream()
    yield server
    server.stop()


def targets(v4: int, v6: int) -> list[str]:
    """Every way we know to write the host's loopback, a private or link-local address, the metadata service."""
    return [
        f"127.0.0.1:{v4}", f"[::1]:{v6}", f"127.1:{v4}", f"0x7f000001:{v4}", f"2130706433:{v4}", f"0177.0.0.1:{v4}",
        f"[::ffff:127.0.0.1]:{v4}", f"[::ffff:7f00:1]:{v4}", f"[::7f00:1]:{v4}", f"[64:ff9b::7f00:1]:{v4}",
        f"[2002:7f00:1::]:{v4}", f"0.0.0.0:{v4}", f"localhost:{v4}", f"loopback.test:{v4}", f"loopback6.test:{v6}",
        "169.254.169.254:80", "[fe80::1]:80", "10.0.0.1:80", "100.64.0.1:80", "private.test:80", "metadata.test:80",
    ]


def test_loopback_private_and_metadata_addresses_are_refused_in_every_form(attacker, canaries):
    v4, v6, accepted = canaries
    aims = targets(v4, v6)
    code = ASK + (
        "def main(aims):\n"
        "    out = []\n"
        "    for aim in aims:\n"
        "        out.append(ask(f'CONNECT {aim} HTTP/1.1\\r\\nHost: {aim}\\r\\n\\r\\n'))\n"
        "        out.append(ask(f'GET http://{aim}/ HTTP/1.1\\r\\nHost: {aim}\\r\\n\\r\\n'))\n"
        "    return out\n"
    )
    body = attacker.run(code, arguments={"aims": aims}, network=EVERYWHERE, timeout=60)
    assert body["status"] == "succeeded", body
    assert body["result"]["value"] == ["HTTP/1.1 403 Forbidden"] * (2 * len(aims)), body["result"]["value"]
    assert len(body["egress"]) == 2 * len(aims)
    for record in body["egress"]:
        assert not record["allowed"] and "not a public address" in record["reason"], record
        assert record["bytes_out"] == record["bytes_in"] == 0
    reasons = {record["host"]: record["reason"] for record in body["egress"]}
    assert reasons["metadata.test"] == "metadata.test resolves to 169.254.169.254, not a public address"
    assert reasons["0x7f000001"] == "0x7f000001 resolves to 127.0.0.1, not a public address"
    assert reasons["::ffff:7f00:1"] == "::ffff:7f00:1 is not a public address (it reaches 127.0.0.1)"
    stderr = body["stderr"].splitlines()
    assert stderr[0] == f"sandboxctl: connection to 127.0.0.1:{v4} refused: 127.0.0.1 is not a public address"
    assert stderr[-1] == f"sandboxctl: {2 * len(aims) - 20} more connections refused"
    time.sleep(0.5)
    assert accepted == [], "nothing reached the host's loopback"


def test_a_name_with_a_reachable_and_a_loopback_address_is_refused(attacker, http_upstream):
    # mixed.test resolves to 127.0.0.3 (reachable in the tests) and to 127.0.0.1: every address must pass.
    code = ASK + "def main(aim):\n    return ask(f'GET http://{aim}/ HTTP/1.1\\r\\nHost: {aim}\\r\\n\\r\\n')\n"
    body = attacker.run(code, arguments={"aim": f"mixed.test:{http_upstream.port}"}, network=EVERYWHERE)
    assert body["result"]["value"] == "HTTP/1.1 403 Forbidden"
    assert body["egress"][0]["reason"] == "mixed.test resolves to 127.0.0.1, not a public address"
    assert http_upstream.requests == []


def test_a_tls_server_name_other_than_the_connect_host_is_refused(attacker, https_upstream):
    code = ASK.replace("    s.close()\n", "    return s, data\n    s.close()\n") + (
        "import ssl\n"
        "def main(port, names):\n"
        "    out = []\n"
        "    for name in names:\n"
        "        s, status = ask(f'CONNECT upstream.test:{port} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "        context = ssl.create_default_context()\n"
        "        context.check_hostname = False\n"
        "        context.verify_mode = ssl.CERT_NONE\n"
        "        try:\n"
        "            context.wrap_socket(s, server_hostname=name).close()\n"
        "            out.append('handshake done')\n"
        "        except (ssl.SSLError, OSError) as exc:\n"
        "            out.append(type(exc).__name__)\n"
        "    return out\n"
    )
    body = attacker.run(code, arguments={"port": https_upstream.port, "names": ["other.test", None, "upstream.test"]},
                        network=EVERYWHERE)
    outcomes = body["result"]["value"]
    assert outcomes[:2] != ["handshake done"] * 2 and "handshake done" not in outcomes[:2], body
    assert outcomes[2] == "handshake done", "the same tunnel with the right name works"
    reasons = [record["reason"] for record in body["egress"]]
    assert reasons[0] == "the TLS server name (other.test) is not the CONNECT host"
    assert reasons[1] == "the TLS ClientHello names no server; the CONNECT named upstream.test"
    assert https_upstream.names_seen == ["upstream.test"], "no other handshake reached the upstream"


def test_a_host_header_swapped_after_connect_or_in_a_proxy_request_is_refused(attacker, http_upstream):
    port = http_upstream.port
    code = ASK + (
        "def main(port):\n"
        "    tunnel = socket.create_connection(('127.0.0.1', 3128), timeout=10)\n"
        "    tunnel.sendall(f'CONNECT upstream.test:{port} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'.encode())\n"
        "    opened = tunnel.recv(4096).split(b'\\r\\n')[0].decode()\n"
        "    tunnel.sendall(f'GET / HTTP/1.1\\r\\nHost: other.test:{port}\\r\\n\\r\\n'.encode())\n"
        "    swapped = tunnel.recv(4096).split(b'\\r\\n')[0].decode()\n"
        "    return [opened, swapped,\n"
        "            ask(f'GET http://upstream.test:{port}/ HTTP/1.1\\r\\nHost: other.test:{port}\\r\\n\\r\\n'),\n"
        "            ask(f'CONNECT upstream.test:{port} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nSSH-2.0-OpenSSH_9.2\\r\\n'),\n"
        "            ask(f'GET / HTTP/1.1\\r\\nHost: upstream.test:{port}\\r\\n\\r\\n')]\n"
    )
    body = attacker.run(code, arguments={"port": port}, network=EVERYWHERE)
    # The SSH banner is judged after the tunnel opened (200): the refusal closes it.
    assert body["result"]["value"] == ["HTTP/1.1 200 Connection established", "HTTP/1.1 403 Forbidden",
                                       "HTTP/1.1 403 Forbidden", "HTTP/1.1 200 Connection established",
                                       "HTTP/1.1 400 Bad Request"], body
    assert http_upstream.requests == [], "no request for another host reached the upstream"
    reasons = [record["reason"] for record in body["egress"]]
    assert f"the Host header (other.test:{port}) is not the CONNECT host" in reasons
    assert f"the Host header (other.test:{port}) is not the URL's host" in reasons
    assert "a CONNECT tunnel carries TLS or HTTP requests to its own host only" in reasons


def test_a_second_request_pipelined_into_a_tunnel_goes_nowhere(attacker, http_upstream):
    port = http_upstream.port
    code = (
        "import socket\n"
        "def main(port):\n"
        "    s = socket.create_connection(('127.0.0.1', 3128), timeout=10)\n"
        "    s.sendall((f'CONNECT upstream.test:{port} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'\n"
        "               f'GET /first HTTP/1.1\\r\\nHost: upstream.test:{port}\\r\\n\\r\\n'\n"
        "               f'GET /second HTTP/1.1\\r\\nHost: other.test:{port}\\r\\n\\r\\n').encode())\n"
        "    data = b''\n"
        "    while chunk := s.recv(65536):\n"
        "        data += chunk\n"
        "    return data.decode(errors='replace')\n"
    )
    body = attacker.run(code, arguments={"port": port}, network=EVERYWHERE)
    assert '"path": "/first"' in body["result"]["value"]
    assert [request["path"] for request in http_upstream.requests] == ["/first"]


def test_names_resolve_in_the_proxy_only_and_udp_gets_nowhere(attacker):
    code = (
        "import socket\n"
        "QUERY = bytes.fromhex('123401000001000000000000076578616d706c6503636f6d0000010001')  # example.com A\n"
        "def main():\n"
        "    out = []\n"
        "    try:\n"
        "        socket.getaddrinfo('upstream.test', 443)\n"
        "        out.append('resolved')\n"
        "    except OSError as exc:\n"
        "        out.append(type(exc).__name__)\n"
        "    for server in (('8.8.8.8', 53), ('127.0.0.53', 53), ('10.0.0.1', 53), ('127.0.0.1', 3128)):\n"
        "        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "        u.settimeout(1)\n"
        "        try:\n"
        "            u.sendto(QUERY, server)\n"
        "            u.recvfrom(512)\n"
        "            out.append('answered')\n"
        "        except OSError as exc:\n"
        "            out.append(type(exc).__name__)\n"
        "    return out\n"
    )
    body = attacker.run(code, network=EVERYWHERE)
    outcomes = body["result"]["value"]
    assert outcomes[0] == "gaierror"
    assert "answered" not in outcomes, outcomes
    assert body["egress"] == []


def test_the_code_can_neither_use_the_proxy_socket_itself_nor_stop_the_relay(attacker):
    code = (
        "import os, signal, socket\n"
        "def main():\n"
        "    out = {}\n"
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "    try:\n"
        "        s.connect('/run/sandboxctl/proxy.sock')\n"
        "        out['socket'] = 'connected'\n"
        "    except OSError as exc:\n"
        "        out['socket'] = type(exc).__name__\n"
        "    relays = []\n"
        "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "        try:\n"
        "            status = open(f'/proc/{pid}/status').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if int(pid) != 1 and '\\nUid:\\t0\\t' in status:\n"
        "            relays.append(int(pid))\n"
        "    out['relays'] = len(relays)\n"
        "    for pid in relays:\n"
        "        try:\n"
        "            os.kill(pid, signal.SIGKILL)\n"
        "            out['kill'] = 'killed'\n"
        "        except OSError as exc:\n"
        "            out['kill'] = type(exc).__name__\n"
        "    try:\n"
        "        open('/run/sandboxctl/planted', 'w')\n"
        "        out['write'] = 'written'\n"
        "    except OSError as exc:\n"
        "        out['write'] = type(exc).__name__\n"
        "    return out\n"
    )
    body = attacker.run(code, network=EVERYWHERE)
    assert body["result"]["value"] == {"socket": "PermissionError", "relays": 1, "kill": "PermissionError",
                                       "write": "PermissionError"}, body


def test_a_sandbox_without_egress_has_no_way_out_while_another_has_one(attacker, http_upstream):
    holder = ("import time, requests\n"
              "def main(url):\n"
              "    requests.get(url, timeout=10)\n"
              "    time.sleep(4)\n"
              "    return 'held'\n")
    held = attacker.post("/api/v1/executions", json={
        "language": "python", "code": holder, "arguments": {"url": http_upstream.url()}, "network": EVERYWHERE,
        "wait": False})
    assert held.status_code == 202
    deadline = time.monotonic() + 30
    while not http_upstream.requests and time.monotonic() < deadline:
        time.sleep(0.1)
    assert http_upstream.requests, "the egress run is live"
    probe = ("import os, socket\n"
             "def main():\n"
             "    out = {'folder': sorted(os.listdir('/run/sandboxctl'))}\n"
             "    for name, family, address in (('relay', socket.AF_INET, ('127.0.0.1', 3128)),\n"
             "                                  ('socket', socket.AF_UNIX, '/run/sandboxctl/proxy.sock')):\n"
             "        s = socket.socket(family, socket.SOCK_STREAM)\n"
             "        try:\n"
             "            s.connect(address)\n"
             "            out[name] = 'connected'\n"
             "        except OSError as exc:\n"
             "            out[name] = type(exc).__name__\n"
             "    out['proxy_env'] = os.environ.get('HTTP_PROXY')\n"
             "    return out\n")
    body = attacker.run(probe)
    assert body["result"]["value"] == {"folder": ["ca.pem"], "relay": "ConnectionRefusedError",
                                       "socket": "FileNotFoundError", "proxy_env": None}, body
    assert body["egress"] == []


def test_account_a_cannot_use_account_bs_ceiling(api, user, live_server, django_user_model, https_upstream):
    other = django_user_model.objects.create_user("account-b", password="account-b-password")
    b_api = Api(live_server.url, ApiToken.issue(other, name="b")[1])
    policy.set_ceiling(other, ["upstream.test:*"])
    policy.set_ceiling(user, ["other.test:*"])
    # A may not ask for B's host.
    refused = api.post("/api/v1/executions", json={"language": "python", "code": "x = 1",
                                                   "network": {"allow": ["upstream.test:*"]}})
    assert refused.status_code == 403 and refused.json()["refused"] == ["upstream.test:*"]
    # While B's run holds its channel open, A's run (allowed other.test only) still cannot reach B's host.
    holder = ("import time, requests\n"
              "def main(url):\n"
              "    requests.get(url, timeout=10)\n"
              "    time.sleep(4)\n"
              "    return 'held'\n")
    held = b_api.post("/api/v1/executions", json={
        "language": "python", "code": holder, "arguments": {"url": https_upstream.url(path="/b")},
        "network": {"allow": ["upstream.test:*"]}, "wait": False})
    assert held.status_code == 202
    code = ("import requests\n"
            "def main(url):\n"
            "    try:\n"
            "        requests.get(url, timeout=10)\n"
            "    except requests.exceptions.ProxyError as exc:\n"
            "        return 'refused' if '403' in str(exc) else str(exc)\n"
            "    return 'reached'\n")
    body = api.run(code, arguments={"url": https_upstream.url(path="/a")}, network={"allow": ["other.test:*"]})
    assert body["result"]["value"] == "refused", body
    b_run = held.json()["id"]
    assert wait_until(lambda: b_api.get(f"/api/v1/executions/{b_run}").json()["status"] == "succeeded", 60)
    assert [request["path"] for request in https_upstream.requests] == ["/b"]


def test_nothing_gets_out_of_a_session_between_cells(attacker, http_upstream):
    session = open_session(attacker, network=EVERYWHERE)
    try:
        first = cell(attacker, session, (
            "import threading, time, requests\n"
            "outcomes = []\n"
            "def keep_trying(url):\n"
            "    while True:\n"
            "        try:\n"
            "            outcomes.append(requests.get(url, timeout=2).status_code)\n"
            "        except requests.exceptions.RequestException as exc:\n"
            "            outcomes.append(type(exc).__name__)\n"
            "        time.sleep(0.2)\n"
            f"threading.Thread(target=keep_trying, args=({http_upstream.url(path='/bg')!r},), daemon=True).start()\n"
            "time.sleep(1)\n"))
        assert first["status"] == "succeeded", first
        reached_in_cell = len(http_upstream.requests)
        assert reached_in_cell >= 1
        time.sleep(2)  # between cells: the relay is gone and the socket unbound
        assert len(http_upstream.requests) == reached_in_cell
        shut = attacker.request("PATCH", f"/api/v1/sessions/{session['id']}", json={"network": {"allow": []}})
        assert shut.status_code == 200
        second = cell(attacker, session, "import time\ntime.sleep(1)\ndef main():\n    return outcomes[-3:]")
        assert all(outcome != 200 for outcome in second["result"]["value"]), second
        assert len(http_upstream.requests) == reached_in_cell
        assert second["egress"] == []
    finally:
        close(attacker, session)
