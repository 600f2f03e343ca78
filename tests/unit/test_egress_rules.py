"""Egress rules without a sandbox: allowlist entries, ceilings and presets, what a run is told, the server name
a ClientHello carries, and the API's answers to requests beyond a ceiling (SQLite, no worker)."""

import ipaddress
import json
import ssl

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import Client

from executor import addresses, tls_hello
from executor.config import Limits, SandboxConfig
from executor.egress import (
    BUILTIN_PRESETS,
    PROXY_URL,
    Allowlist,
    EntryError,
    beyond,
    expand,
    job_egress,
    parse_entry,
    refusal_lines,
)
from providers.egress import e2b_network
from sandboxctl import env
from sandboxctl.egress import policy
from sandboxctl.egress.models import AccountEgress
from sandboxctl.executions.models import ApiToken, Execution


@pytest.mark.parametrize(("written", "normal"), [
    ("Example.COM.", "example.com"),
    ("example.com:443", "example.com:443"),
    ("*.GitHub.com", "*.github.com"),
    ("*.github.com:*", "*.github.com:*"),
    ("203.0.113.0/24:443", "203.0.113.0/24:443"),
    ("2001:db8::/32", "[2001:db8::]/32"),
    ("[2001:db8::1]:8443", "[2001:db8::1]:8443"),
    ("10.1.2.3", "10.1.2.3"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("*", "*"),
])
def test_entries_are_normalised(written, normal):
    assert str(parse_entry(written)) == normal
    assert str(parse_entry(normal)) == normal


@pytest.mark.parametrize(("written", "problem"), [
    ("localhost", "neither a preset nor a host name"),
    ("10.0.0.1/8", "has host bits set"),
    ("example.com:70000", "not a port"),
    ("example.com:", "not a port"),
    ("*.10.0.0.1", "a wildcard names a domain"),
    ("exa mple.com", "not a valid host name"),
    ("[::1", r"an unclosed \["),
    ("", "non-empty"),
])
def test_unreadable_entries_say_why(written, problem):
    with pytest.raises(EntryError, match=problem):
        parse_entry(written)


def test_an_entry_without_a_port_means_80_and_443():
    allowlist = Allowlist(["example.com", "*.github.com:8443", "203.0.113.0/24:*"])
    assert allowlist.allows_name("example.com", 443) and allowlist.allows_name("example.com", 80)
    assert not allowlist.allows_name("example.com", 22)
    assert not allowlist.allows_name("www.example.com", 443), "a host entry is that host only"
    assert allowlist.allows_name("api.github.com", 8443) and not allowlist.allows_name("github.com", 8443)
    assert allowlist.allows_name("203.0.113.9", 5432) and not allowlist.allows_name("203.0.114.9", 443)


def test_a_name_is_allowed_by_a_network_only_when_all_its_addresses_are_inside():
    allowlist = Allowlist(["203.0.113.0/24:443"])
    inside, outside = ipaddress.ip_address("203.0.113.5"), ipaddress.ip_address("198.51.100.1")
    assert allowlist.may_allow_by_address(443) and not allowlist.may_allow_by_address(80)
    assert allowlist.allows_addresses([inside], 443)
    assert not allowlist.allows_addresses([inside, outside], 443)


def test_presets_expand_and_operators_define_their_own():
    presets = {**BUILTIN_PRESETS, "github": ["github.com", "*.githubusercontent.com"]}
    assert expand(["pypi", "GitHub", "pypi.org:443"], presets) == [
        "pypi.org:443", "files.pythonhosted.org:443", "github.com", "*.githubusercontent.com"]


@pytest.mark.parametrize(("requested", "ceiling", "refused"), [
    (["api.github.com"], ["*.github.com"], []),
    (["*.api.github.com:443"], ["*.github.com"], []),
    (["github.com"], ["*.github.com"], ["github.com"]),
    (["example.com:22"], ["example.com"], ["example.com:22"]),
    (["example.com:*"], ["example.com"], ["example.com:*"]),
    (["example.com:22"], ["example.com:*"], []),
    (["203.0.113.0/25:443"], ["203.0.113.0/24"], []),
    (["203.0.112.0/23"], ["203.0.113.0/24"], ["203.0.112.0/23"]),
    (["api.example.com"], ["203.0.113.0/24"], ["api.example.com"]),
    (["anything.example", "10.0.0.0/8:*"], ["*:*", "0.0.0.0/0:*"], []),
])
def test_a_request_is_within_a_ceiling_only_when_every_entry_is_covered(requested, ceiling, refused):
    assert beyond(expand(requested, {}), expand(ceiling, {})) == refused


def test_address_rules_take_an_allowance_of_their_own():
    loopback = ipaddress.ip_address("127.0.0.3")
    assert addresses.address_problem(loopback) == "127.0.0.3 is not a public address"
    assert addresses.address_problem(loopback, [ipaddress.ip_network("127.0.0.3/32")]) is None
    mapped = ipaddress.ip_address("::ffff:10.0.0.1")
    assert addresses.address_problem(mapped) == "::ffff:a00:1 is not a public address (it reaches 10.0.0.1)"
    with pytest.raises(addresses.Refused, match="db.test resolves to 10.0.0.1, not a public address"):
        addresses.checked("db.test", [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")])


def test_a_run_with_an_allowlist_is_told_where_the_relay_is_and_one_without_nothing(tmp_path):
    assert job_egress((), SandboxConfig()) is None
    told = job_egress(("pypi.org:443",), SandboxConfig(egress_ca_bundle=tmp_path / "ca.pem",
                                                       egress_pip_index_url="https://mirror.example/simple/"))
    assert (told["port"], told["socket"], told["ca_file"]) == (3128, "/run/sandboxctl/proxy.sock",
                                                               "/run/sandboxctl/ca.pem")
    assert told["env"]["HTTPS_PROXY"] == told["env"]["http_proxy"] == PROXY_URL
    assert told["env"]["NO_PROXY"] == "localhost,127.0.0.1,::1"
    assert told["env"]["PIP_INDEX_URL"] == "https://mirror.example/simple/"
    assert told["env"]["SSL_CERT_FILE"] == told["env"]["NODE_EXTRA_CA_CERTS"] == "/run/sandboxctl/ca.pem"


def test_limits_carry_the_allowlist_as_a_tuple_through_json():
    limits = Limits(egress=["example.com"])
    assert limits.egress == ("example.com",)
    assert Limits(**json.loads(json.dumps(limits.__dict__))) == limits


def test_refused_connections_become_stderr_lines():
    records = [{"host": "evil.example", "port": 443, "allowed": False, "reason": "not in this run's allowlist"},
               {"host": "ok.example", "port": 443, "allowed": True, "reason": ""},
               {"host": "::1", "port": 80, "allowed": False, "reason": "::1 is not a public address"}]
    assert refusal_lines(records) == (
        "sandboxctl: connection to evil.example:443 refused: not in this run's allowlist\n"
        "sandboxctl: connection to [::1]:80 refused: ::1 is not a public address\n")
    assert refusal_lines(records[:1] * 25, limit=20).splitlines()[-1] == "sandboxctl: 5 more connections refused"


def python_hello(server_name):
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_server_name_of_a_real_client_hello():
    hello = python_hello("files.example.com")
    assert tls_hello.handshake_message(hello[:30]) is None, "incomplete: more bytes are needed"
    assert tls_hello.parse_hello(tls_hello.handshake_message(hello)).server_name == "files.example.com"
    context = ssl.create_default_context()
    context.check_hostname = False
    assert tls_hello.parse_hello(tls_hello.handshake_message(python_hello(None))).server_name is None
    with pytest.raises(tls_hello.NotTLS):
        tls_hello.handshake_message(b"GET / HTTP/1.1\r\n\r\n")


def test_e2b_is_told_the_hosts_and_networks_with_everything_else_denied():
    assert e2b_network(("pypi.org:443", "*.github.com", "203.0.113.0/24:*", "*")) == {
        "allow_out": ["pypi.org", "*.github.com", "203.0.113.0/24", "0.0.0.0/0"], "deny_out": ["0.0.0.0/0"]}


def test_egress_settings_name_the_variable(monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_HOSTS", "mirror.internal=10.0.0.5,a.test=::1,a.test=127.0.0.3")
    assert env.env_host_map("SANDBOX_TEST_HOSTS") == {
        "mirror.internal": (ipaddress.ip_address("10.0.0.5"),),
        "a.test": (ipaddress.ip_address("::1"), ipaddress.ip_address("127.0.0.3"))}
    monkeypatch.setenv("SANDBOX_TEST_HOSTS", "mirror.internal")
    with pytest.raises(ImproperlyConfigured, match="SANDBOX_TEST_HOSTS='mirror.internal'"):
        env.env_host_map("SANDBOX_TEST_HOSTS")


# Ceilings, on SQLite.


@pytest.mark.django_db
def test_ceilings_keep_preset_names_and_a_request_gets_what_it_asked_within(django_user_model, settings):
    settings.SANDBOX_EGRESS_PRESETS = {**BUILTIN_PRESETS, "mirror": ["mirror.example:8443"]}
    account = django_user_model.objects.create_user("a")
    assert policy.allowlist_for(account, []) == ()
    with pytest.raises(policy.BeyondCeiling) as refused:
        policy.allowlist_for(account, ["pypi"])
    assert refused.value.refused == ["pypi.org:443", "files.pythonhosted.org:443"]
    assert policy.set_ceiling(account, ["PyPI", "mirror", "*.Example.org"]) == ["pypi", "mirror", "*.example.org"]
    assert policy.allowlist_for(account, ["mirror", "a.example.org"]) == ("mirror.example:8443", "a.example.org")
    settings.SANDBOX_EGRESS_PRESETS = {**BUILTIN_PRESETS, "mirror": ["mirror2.example:8443"]}
    assert policy.whole_ceiling(account) == ("pypi.org:443", "files.pythonhosted.org:443", "mirror2.example:8443",
                                             "*.example.org"), "a changed preset reaches every ceiling naming it"


@pytest.mark.django_db
def test_a_new_account_starts_with_the_default_and_existing_ones_keep_theirs(django_user_model):
    before = django_user_model.objects.create_user("before")
    assert policy.set_default(["pypi"]) == ["pypi"]
    after = django_user_model.objects.create_user("after")
    assert policy.ceiling(after) == ["pypi"]
    assert policy.ceiling(before) == []
    policy.set_default([])
    assert policy.ceiling(django_user_model.objects.create_user("later")) == []


@pytest.mark.django_db
def test_set_egress_sets_and_clears_a_ceiling(django_user_model, capsys):
    account = django_user_model.objects.create_user("ragflow")
    call_command("set_egress", "ragflow", "upstream.example", "pypi")
    assert policy.ceiling(account) == ["upstream.example", "pypi"]
    assert "ragflow may reach: upstream.example, pypi" in capsys.readouterr().out
    call_command("set_egress", "ragflow")
    assert AccountEgress.objects.get(account=account).allow == []
    with pytest.raises(CommandError, match="bad entry"):
        call_command("set_egress", "ragflow", "localhost")
    with pytest.raises(CommandError, match="no account named 'nobody'"):
        call_command("set_egress", "nobody", "pypi")
    call_command("set_egress", "--default", "npm")
    assert policy.default_ceiling() == ["npm"]


# The API's answers, with no worker (nothing is ever queued).


@pytest.fixture
def caller(django_user_model):
    user = django_user_model.objects.create_user("caller")
    return user, Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)[1]}")


def submit(client: Client, network) -> object:
    body = {"language": "python", "code": "x = 1", "network": network, "wait": False}
    return client.post("/api/v1/executions", data=json.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_beyond_the_ceiling_is_403_and_nothing_is_stored(caller):
    user, client = caller
    policy.set_ceiling(user, ["*.github.com"])
    response = submit(client, {"allow": ["api.github.com", "evil.example"]})
    assert response.status_code == 403
    assert response.json()["refused"] == ["evil.example"]
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_a_provider_that_cannot_hold_a_sandbox_to_an_allowlist_is_a_400_naming_it(caller, settings):
    user, client = caller
    settings.SANDBOX_BACKEND = "docker"
    policy.set_ceiling(user, ["*:*"])
    response = submit(client, {"allow": ["pypi"]})
    assert response.status_code == 400
    assert "Self-managed gVisor pool (self_managed) cannot hold its sandboxes to an egress allowlist on the docker " \
           "backend" in response.json()["network"][0]
    assert not Execution.objects.exists()


def test_an_allowlist_of_a_million_entries_is_refused_before_any_is_read():
    with pytest.raises(EntryError, match="1000000 entries; at most 64"):
        expand(["a.example"] * 1_000_000, {})
