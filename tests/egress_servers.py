"""Upstreams for the egress tests, on the loopback only: 127.0.0.3, which the test worker's proxy may reach
(SANDBOX_EGRESS_ALLOWED_NETWORKS), while 127.0.0.1 stays refused as in a deployment. A private CA issues
their certificates; the test worker trusts it as an operator's extra bundle (SANDBOX_EGRESS_CA_BUNDLE).
Names such as upstream.test resolve to 127.0.0.3 in the proxy alone (SANDBOX_EGRESS_RESOLVE)."""

import datetime
import hashlib
import http.server
import io
import ipaddress
import json
import socketserver
import ssl
import threading
import zipfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

UPSTREAM_ADDRESS = "127.0.0.3"
TEST_NETWORK = "127.0.0.3/32"
# Names the test proxy resolves without DNS: the upstream's, names standing for addresses no run may reach, and
# one name with an address of each kind.
TEST_NAMES = [
    ("upstream.test", "127.0.0.3"),
    ("other.test", "127.0.0.3"),
    ("loopback.test", "127.0.0.1"),
    ("private.test", "10.0.0.1"),
    ("metadata.test", "169.254.169.254"),
    ("loopback6.test", "::1"),
    ("mixed.test", "127.0.0.3"),
    ("mixed.test", "127.0.0.1"),
]
SERVER_NAMES = ("upstream.test", "other.test")


def resolve_setting() -> str:
    return ",".join(f"{name}={address}" for name, address in TEST_NAMES)


class TestCA:
    """A private CA and one server certificate it issued for the test names."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandboxctl egress test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False, decipher_only=False),
                             critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName(name) for name in SERVER_NAMES] + [x509.IPAddress(ipaddress.ip_address(UPSTREAM_ADDRESS))]
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                      SERVER_NAMES[0])]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file = folder / "server.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file)
        return context


class Upstream(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """An HTTP(S) server on 127.0.0.3 answering what it was asked: {host, path, sni, body}; /redirect answers
    302 to /landed; /big?n=N answers N bytes; /simple/... serves a package index (add_wheel)."""

    daemon_threads = True

    def __init__(self, ca: TestCA | None = None) -> None:
        super().__init__((UPSTREAM_ADDRESS, 0), Handler)
        self.names_seen: list[str | None] = []
        self.requests: list[dict] = []
        self.wheels: dict[str, bytes] = {}
        if ca is not None:
            context = ca.server_context()
            context.sni_callback = lambda sock, name, ctx: self.names_seen.append(name)
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if ca is not None else "http"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, name: str = "upstream.test", path: str = "/") -> str:
        return f"{self.scheme}://{name}:{self.port}{path}"

    def add_wheel(self, name: str, version: str, module_source: str) -> str:
        """Build a pure-Python wheel of one module named `name` and serve it from /simple/<name>/."""
        filename = f"{name}-{version}-py3-none-any.whl"
        dist_info = f"{name}-{version}.dist-info"
        files = {f"{name}.py": module_source.encode(),
                 f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
                 f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: sandboxctl-tests\nRoot-Is-Purelib: true\n"
                                       b"Tag: py3-none-any\n"}
        record = "".join(f"{path},sha256={_digest(data)},{len(data)}\n" for path, data in files.items())
        files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path, data in files.items():
                archive.writestr(path, data)
        self.wheels[filename] = buffer.getvalue()
        return filename

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hangs up early (a test that read what it needed) is no error of the upstream

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _digest(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.answer()

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server: Upstream = self.server
        server.requests.append({"host": self.headers.get("Host"), "path": self.path, "method": self.command})
        if self.path.startswith("/simple/"):
            return self.index()
        if self.path.startswith("/files/"):
            return self.send(200, server.wheels.get(self.path.rsplit("/", 1)[-1], b""), "application/octet-stream")
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://other.test/landed")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.path.startswith("/big"):
            size = int(self.path.split("n=", 1)[1]) if "n=" in self.path else 1024 * 1024
            return self.send(200, b"x" * size, "application/octet-stream")
        payload = {"host": self.headers.get("Host"), "path": self.path, "body": body.decode(errors="replace"),
                   "sni": server.names_seen[-1] if server.names_seen else None}
        return self.send(200, json.dumps(payload).encode(), "application/json")

    def index(self) -> None:
        server: Upstream = self.server
        name = self.path.strip("/").split("/")[1] if self.path.count("/") > 2 else ""
        links = "".join(f'<a href="/files/{filename}">{filename}</a>\n' for filename in server.wheels
                        if filename.split("-")[0] == name)
        if not links:
            return self.send(404, b"not found", "text/plain")
        return self.send(200, f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode(), "text/html")

    def send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
