"""Callbacks go only to public addresses, judged by what an address reaches: every IPv6 form that carries an
IPv4 address is unwrapped, and ranges Python calls global but are not (site-local, local-use NAT64) are refused.

No test here lets a callback to a non-loopback address reach delivery, even if the guard regressed: the submit
table sends requests that are also invalid for another field (`language`), so nothing is ever stored, and
the delivery tests use names that resolve to loopback only.
"""

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

import pytest

from sandboxctl.executions import outbound
from sandboxctl.executions.models import Execution
from sandboxctl.worker import callbacks

FORMS = {
    "ipv4_compatible_loopback": "http://[::7f00:1]:18999/",
    "ipv4_compatible_metadata": "http://[::a9fe:a9fe]/",
    "nat64_loopback": "http://[64:ff9b::7f00:1]/",
    "nat64_metadata": "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "nat64_local_use": "http://[64:ff9b:1::a00:1]/",
    "site_local": "http://[fec0::1]/",
    "mapped_loopback": "http://[::ffff:7f00:1]/",
    "mapped_private": "http://[::ffff:10.0.0.1]/",
    "sixtofour_loopback": "http://[2002:7f00:1::]/",
    "sixtofour_private": "http://[2002:c0a8:1::1]/",
    "teredo_private_client": "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",  # client 10.0.0.1, obfuscated
    "isatap_private": "http://[2a00:1450::200:5efe:a00:1]/",
    "unique_local": "http://[fd00::1]/",
    "link_local": "http://[fe80::1]/",
    "documentation_v6": "http://[2001:db8::1]/",
    "unspecified_v6": "http://[::]/",
    "loopback_v6": "http://[::1]/",
    "multicast_v6": "http://[ff02::1]/",
    "loopback": "http://127.0.0.1/",
    "metadata": "http://169.254.169.254/",
    "shared_address_space": "http://100.64.0.1/",
    "this_network": "http://0.0.0.0/",
    "benchmarking": "http://198.18.0.1/",
    "reserved_v4": "http://240.0.0.1/",
    "broadcast": "http://255.255.255.255/",
}


@pytest.fixture
def submitter(live_server, token):
    from conftest import Api

    return Api(live_server.url, token)


@pytest.mark.parametrize("case", FORMS, ids=FORMS.keys())
def test_every_form_of_a_private_address_is_refused_at_submit(submitter, case):
    body = {"language": "cobol", "code": "x = 1", "callback_url": FORMS[case]}
    response = submitter.post("/api/v1/executions", json=body)
    assert response.status_code == 400, response.text
    errors = response.json()
    assert "language" in errors, "the request is invalid twice over: it can never be stored"
    assert "not a public address" in errors["callback_url"][0], errors
    assert not Execution.objects.exists()


@pytest.mark.parametrize("case", FORMS, ids=FORMS.keys())
def test_every_form_is_refused_at_delivery_too(case, settings):
    # A row stored before this guard existed is judged again when delivered: the literal resolves without a
    # lookup (AI_NUMERICHOST) and is refused before any connection is made.
    settings.SANDBOX_CALLBACK_ALLOWED_NETWORKS = []
    host = urlsplit(FORMS[case]).hostname
    with pytest.raises(outbound.Refused):
        outbound.resolve_checked(host, 80)


@pytest.mark.parametrize("url", ["http://[::ffff:8.8.8.8]/", "http://[64:ff9b::808:808]/", "http://8.8.8.8/",
                                 "http://[2606:4700:4700::1111]/", "http://example.com/hook"])
def test_public_addresses_and_names_pass_the_literal_check(url):
    assert outbound.literal_host_problem(url) is None


class Listener:
    """An HTTP listener on a loopback address, counting what reaches it (a refused callback must not)."""

    def __init__(self, host: str) -> None:
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.attempts += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (HTTPServer,), {"address_family": family})
        self.server = server_class((host, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def loopback_names() -> list[str]:
    """Names this machine resolves to loopback without asking a DNS server (from /etc/hosts)."""
    names = []
    for line in open("/etc/hosts").read().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) > 1 and fields[0] in ("127.0.0.1", "::1"):
            names += fields[1:]
    return sorted(set(names)) or ["localhost"]


@pytest.mark.parametrize("name", loopback_names())
def test_a_name_resolving_to_loopback_is_refused_at_delivery(name, transactional_db, django_user_model):
    listener = Listener("127.0.0.1")
    try:
        user = django_user_model.objects.create_user("hooked")
        url = f"http://{name}:{listener.port}/hook"
        execution = Execution.objects.create(caller=user, language="python", code="x = 1", callback_url=url,
                                             status="succeeded", callback_status="pending")
        Execution.objects.filter(pk=execution.pk).update(callback_due_at=execution.created_at)
        assert callbacks.deliver(execution.pk) is None
        execution.refresh_from_db()
        assert execution.callback_status == "refused"
        assert "not a public address" in execution.callback_error
        assert listener.attempts == 0
    finally:
        listener.server.shutdown()
