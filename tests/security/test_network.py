"""Network: a sandbox has no way out — not to the host's services, the gateway, the LAN, the cloud
metadata address, DNS, raw sockets, or the host's abstract UNIX sockets — and every attempt fails fast."""

import socket
import threading
import time

import pytest

CONNECT = (
    "import socket\n"
    "def main(host, port):\n"
    "    try:\n"
    "        socket.create_connection((host, port), timeout=3).close()\n"
    "    except OSError as exc:\n"
    "        return type(exc).__name__\n"
    "    return 'connected'"
)


def host_address() -> str:
    """This machine's own address on its LAN interface (where a careless sandbox could reach it)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


@pytest.fixture
def listener():
    """A TCP listener on every host address, counting the connections it accepts."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


TARGETS = {
    "host_postgres_on_loopback": ("127.0.0.1", 5432),
    "host_redis_on_loopback": ("127.0.0.1", 6379),
    "docker_gateway": ("172.17.0.1", 2375),
    "metadata_service": ("169.254.169.254", 80),
    "internet": ("1.1.1.1", 443),
    "ipv6_loopback_redis": ("::1", 6379),
}


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
def test_outbound_connections_fail_fast(api, target):
    started = time.monotonic()
    body = api.run(CONNECT, arguments={"host": target[0], "port": target[1]})
    assert body["status"] == "succeeded", body
    assert body["result"]["value"] != "connected"
    assert time.monotonic() - started < 5


def test_the_hosts_lan_address_is_unreachable(api, listener):
    port, accepted = listener
    body = api.run(CONNECT, arguments={"host": host_address(), "port": port})
    assert body["result"]["value"] != "connected"
    time.sleep(0.3)
    assert accepted == []


def test_dns_does_not_resolve(api):
    code = (
        "import socket\n"
        "def main():\n"
        "    try:\n"
        "        socket.getaddrinfo('example.com', 80)\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__\n"
        "    return 'resolved'"
    )
    assert api.run(code)["result"]["value"] == "gaierror"


def test_udp_to_a_resolver_goes_nowhere(api):
    code = (
        "import socket\n"
        "def main():\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.settimeout(1)\n"
        "    try:\n"
        "        s.sendto(b'\\x00' * 12, ('8.8.8.8', 53))\n"
        "        s.recvfrom(512)\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__\n"
        "    return 'answered'"
    )
    assert api.run(code)["result"]["value"] != "answered"


@pytest.mark.parametrize("family,kind", [("AF_INET", "SOCK_RAW"), ("AF_PACKET", "SOCK_RAW"),
                                         ("AF_NETLINK", "SOCK_RAW")])
def test_raw_and_packet_sockets_are_refused(api, family, kind):
    code = (
        "import socket\n"
        "def main(family, kind):\n"
        "    try:\n"
        "        proto = 255 if family == 'AF_INET' else 0\n"
        "        s = socket.socket(getattr(socket, family), getattr(socket, kind), proto)\n"
        "        if family == 'AF_NETLINK':\n"
        "            s.bind((0, 0))\n"
        "            return 'netlink bound'\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__\n"
        "    return 'created'"
    )
    value = api.run(code, arguments={"family": family, "kind": kind})["result"]["value"]
    if family == "AF_NETLINK":
        # gVisor offers route netlink over its own empty network stack; there is nothing behind it.
        assert value in ("PermissionError", "OSError", "netlink bound")
    else:
        assert value in ("PermissionError", "OSError")


def test_interfaces_are_only_loopback(api):
    code = "import socket\ndef main():\n    return [name for _, name in socket.if_nameindex()]"
    assert api.run(code)["result"]["value"] in ([], ["lo"])


def test_hosts_abstract_unix_sockets_are_out_of_reach(api):
    name = f"\0sandboxctl-test-{time.time_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(1)
    try:
        code = (
            "import socket\n"
            "def main(name):\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "    try:\n"
            "        s.connect('\\0' + name)\n"
            "    except OSError as exc:\n"
            "        return type(exc).__name__\n"
            "    return 'connected'"
        )
        assert api.run(code, arguments={"name": name[1:]})["result"]["value"] == "ConnectionRefusedError"
    finally:
        server.close()


def test_node_has_no_network(api):
    code = (
        "const net = require('net');\n"
        "function main() { return new Promise((resolve) => {\n"
        "  const s = net.connect(80, '1.1.1.1');\n"
        "  s.on('connect', () => resolve('connected'));\n"
        "  s.on('error', (e) => resolve(e.code));\n"
        "}); }"
    )
    body = api.run(code, language="nodejs")
    assert body["status"] == "succeeded"
    assert body["result"]["value"] != "connected"
