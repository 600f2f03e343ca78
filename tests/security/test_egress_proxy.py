"""The egress proxy on its own, spoken to over a channel's real Unix socket as a sandbox's relay would: what
a hostile client can send that code in a sandbox cannot easily produce (a crafted ClientHello), and the caps
per run and per connection, with settings no test worker runs with. Upstreams are on 127.0.0.3 only."""

import ipaddress
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest

from executor.egress_proxy import EgressProxy, ProxySettings
from tests.egress_servers import TEST_NAMES, TEST_NETWORK, Upstream


def proxy_settings(**overrides) -> ProxySettings:
    hosts: dict = {}
    for name, address in TEST_NAMES:
        hosts[name] = (*hosts.get(name, ()), ipaddress.ip_address(address))
    return ProxySettings(allowed_networks=(ipaddress.ip_network(TEST_NETWORK),), hosts=hosts, **overrides)


@pytest.fixture
def make_channel(tmp_path):
    proxies = []

    def make(entries=("*:*",), folder: Path | None = None, **overrides):
        proxy = EgressProxy(proxy_settings(**overrides))
        proxy.start()
        proxies.append(proxy)
        target = folder or tmp_path / f"channel-{len(proxies)}"
        target.mkdir(exist_ok=True)
        return proxy.open(target, tuple(entries), "test")

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def upstream(egress_ca):
    server = Upstream(egress_ca)
    yield server
    server.stop()


@pytest.fixture
def plain_upstream():
    server = Upstream()
    yield server
    server.stop()


def connect(channel) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(str(channel.path))
    return client


def status_of(client: socket.socket, request: bytes) -> str:
    client.sendall(request)
    data = b""
    while b"\r\n" not in data:
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def read_all(client: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := client.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def client_hello(server_name: str | None) -> bytes:
    """The ClientHello Python's own TLS stack sends for `server_name`."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def with_extension(hello: bytes, kind: int, data: bytes) -> bytes:
    """`hello` (one TLS record) with one more extension appended, lengths fixed up."""
    body = hello[9:]
    offset = 2 + 32
    offset += 1 + body[offset]
    offset += 2 + int.from_bytes(body[offset:offset + 2], "big")
    offset += 1 + body[offset]
    extensions_length = int.from_bytes(body[offset:offset + 2], "big")
    extensions = body[offset + 2:offset + 2 + extensions_length] + struct.pack(">HH", kind, len(data)) + data
    body = body[:offset] + struct.pack(">H", len(extensions)) + extensions
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake


def tunnel(channel, target: str) -> socket.socket:
    client = connect(channel)
    client.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    answer = b""
    while not answer.endswith(b"\r\n\r\n"):
        answer += client.recv(1)
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"
    return client


def test_an_encrypted_client_hello_is_refused(make_channel, upstream):
    channel = make_channel()
    client = tunnel(channel, f"upstream.test:{upstream.port}")
    # An ECH extension (0xfe0d): the outer name says upstream.test, the real one is hidden from the proxy.
    client.sendall(with_extension(client_hello("upstream.test"), 0xFE0D, b"\x00" * 40))
    assert read_all(client) == b""
    assert channel.close()[-1]["reason"] == ("the TLS ClientHello cannot be judged: an encrypted ClientHello hides "
                                             "the server name")
    assert upstream.names_seen == []


def test_a_client_hello_naming_a_second_server_is_refused(make_channel, upstream):
    channel = make_channel()
    client = tunnel(channel, f"upstream.test:{upstream.port}")
    second = b"\x00\x0c" + b"\x00\x00\x0aother.test"  # a server_name list with one more host_name
    client.sendall(with_extension(client_hello("upstream.test"), 0x0000, second))
    assert read_all(client) == b""
    assert "extension 0 appears twice" in channel.close()[-1]["reason"]


def test_a_client_hello_split_across_records_and_packets_is_read_whole(make_channel, upstream):
    channel = make_channel()
    client = tunnel(channel, f"upstream.test:{upstream.port}")
    hello = client_hello("other.test")
    handshake = hello[5:]
    records = b"".join(b"\x16\x03\x01" + struct.pack(">H", len(part)) + part
                       for part in (handshake[:40], handshake[40:100], handshake[100:]))
    for index in range(0, len(records), 7):
        client.sendall(records[index:index + 7])
        time.sleep(0.001)
    assert read_all(client) == b""
    assert channel.close()[-1]["reason"] == "the TLS server name (other.test) is not the CONNECT host"


def test_an_absolute_https_url_is_not_fetched_for_the_client(make_channel, upstream):
    channel = make_channel()
    client = connect(channel)
    request = f"GET https://upstream.test:{upstream.port}/ HTTP/1.1\r\nHost: upstream.test\r\n\r\n".encode()
    assert status_of(client, request) == "HTTP/1.1 400 Bad Request"
    assert upstream.requests == []


def test_the_connection_cap_of_a_run(make_channel, plain_upstream):
    channel = make_channel(max_connections=2)
    statuses = []
    for _ in range(3):
        client = connect(channel)
        request = f"GET {plain_upstream.url()} HTTP/1.1\r\nHost: upstream.test:{plain_upstream.port}\r\n\r\n"
        statuses.append(status_of(client, request.encode()))
        read_all(client)
    assert statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 403 Forbidden"]
    assert channel.close()[-1]["reason"] == "this run's connection cap (2) is reached"
    assert len(plain_upstream.requests) == 2


def test_refused_attempts_count_against_the_connection_cap(make_channel, plain_upstream):
    channel = make_channel((f"upstream.test:{plain_upstream.port}",), max_connections=3)
    for _ in range(3):
        assert status_of(connect(channel), b"GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n") == (
            "HTTP/1.1 403 Forbidden")
    request = f"GET {plain_upstream.url()} HTTP/1.1\r\nHost: upstream.test:{plain_upstream.port}\r\n\r\n"
    assert status_of(connect(channel), request.encode()) == "HTTP/1.1 403 Forbidden"
    assert channel.close()[-1]["reason"] == "this run's connection cap (3) is reached"
    assert plain_upstream.requests == []


def test_the_byte_cap_of_a_run_cuts_the_connection_that_passes_it(make_channel, plain_upstream):
    channel = make_channel(max_bytes=200_000)
    client = connect(channel)
    request = f"GET {plain_upstream.url(path='/big?n=1000000')} HTTP/1.1\r\nHost: upstream.test:{plain_upstream.port}"
    client.sendall((request + "\r\n\r\n").encode())
    received = read_all(client)
    assert 100_000 < len(received) < 400_000
    [record] = channel.close()
    assert record["reason"] == "this run's byte cap (200000 bytes) was reached"
    assert record["bytes_in"] < 300_000


def test_an_idle_tunnel_is_closed(make_channel, upstream):
    channel = make_channel(idle_timeout=1.0)
    client = tunnel(channel, f"upstream.test:{upstream.port}")
    started = time.monotonic()
    client.sendall(client_hello("upstream.test"))
    read_all(client)  # the server's answer, then nothing until the proxy gives up
    assert time.monotonic() - started < 8
    assert channel.close()[-1]["reason"] == "idle for 1s"


def test_closing_a_channel_cuts_its_tunnels_and_removes_its_socket(make_channel, upstream):
    channel = make_channel()
    client = tunnel(channel, f"upstream.test:{upstream.port}")
    client.sendall(client_hello("upstream.test"))
    client.recv(100)  # the server is answering: the tunnel is live
    path = channel.path
    channel.close()
    started = time.monotonic()
    read_all(client)  # ends at the cut, not at the client's 10 s timeout
    assert time.monotonic() - started < 5
    assert not path.exists()
    with pytest.raises(OSError):
        connect(channel)


def test_a_channel_answers_with_its_own_allowlist_only(make_channel, tmp_path, plain_upstream):
    allowed = make_channel((f"upstream.test:{plain_upstream.port}",), folder=tmp_path / "a")
    other = make_channel(("other.test:*",), folder=tmp_path / "b")
    request = f"GET {plain_upstream.url()} HTTP/1.1\r\nHost: upstream.test:{plain_upstream.port}\r\n\r\n".encode()
    assert status_of(connect(allowed), request) == "HTTP/1.1 200 OK"
    assert status_of(connect(other), request) == "HTTP/1.1 403 Forbidden"


def test_garbage_instead_of_a_request_ends_the_connection_and_is_recorded(make_channel):
    channel = make_channel()
    client = connect(channel)
    client.sendall(b"\x16\x03\x01\x00\x05hello\r\n\r\n")
    assert read_all(client) == b""
    client = connect(channel)
    client.sendall(b"CONNECT upstream.test HTTP/1.1\r\nHost: upstream.test\r\n\r\n")
    assert read_all(client).startswith(b"HTTP/1.1 400 Bad Request")
    assert channel.close()[-1]["reason"] == "'upstream.test' names no port"
