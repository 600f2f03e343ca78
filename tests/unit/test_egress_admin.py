"""Staff set egress ceilings in the admin: per account (on its own page too) and the default for new accounts;
an entry that cannot be read is a form error, never a stored ceiling. The history shows each run's egress."""

import pytest
from django.contrib.auth import get_user_model

from sandboxctl.egress import policy
from sandboxctl.egress.models import AccountEgress
from sandboxctl.executions.models import Execution


@pytest.fixture
def staff_client(client, db):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "root-password-1")
    client.force_login(admin)
    return client


def test_staff_set_an_accounts_ceiling_one_entry_per_line(staff_client):
    account = get_user_model().objects.create_user("agent")
    response = staff_client.post("/admin/egress/accountegress/add/",
                                 {"account": account.pk, "allow": "PyPI\n\n *.GitHub.com \n203.0.113.0/24:443\n"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert policy.ceiling(account) == ["pypi", "*.github.com", "203.0.113.0/24:443"]
    listing = staff_client.get("/admin/egress/accountegress/").content.decode()
    assert "pypi, *.github.com, 203.0.113.0/24:443" in listing


def test_an_unreadable_entry_is_a_form_error(staff_client):
    account = get_user_model().objects.create_user("agent")
    response = staff_client.post("/admin/egress/accountegress/add/", {"account": account.pk, "allow": "localhost"})
    assert response.status_code == 200
    assert "is neither a preset nor a host name" in response.content.decode()
    assert not AccountEgress.objects.exists()


def test_the_accounts_own_page_shows_its_ceiling(staff_client):
    account = get_user_model().objects.create_user("agent")
    policy.set_ceiling(account, ["npm", "files.example.com"])
    page = staff_client.get(f"/admin/auth/user/{account.pk}/change/").content.decode()
    assert "egress ceiling" in page
    assert "npm\nfiles.example.com</textarea>" in page


def test_staff_set_the_default_new_accounts_start_with(staff_client):
    response = staff_client.post("/admin/egress/egressdefault/add/", {"allow": "pypi"})
    assert response.status_code == 302
    assert policy.default_ceiling() == ["pypi"]
    assert staff_client.get("/admin/egress/egressdefault/add/").status_code == 403, "one default only"
    assert policy.ceiling(get_user_model().objects.create_user("newcomer")) == ["pypi"]


def test_the_history_lists_a_runs_connections(staff_client):
    execution = Execution.objects.create(
        provider="self_managed", language="python", code="x = 1", code_sha256="cd" * 32, status="succeeded",
        limits={"egress": ["pypi.org:443"]},
        egress=[{"host": "pypi.org", "port": 443, "allowed": True, "reason": "", "bytes_out": 517, "bytes_in": 4096},
                {"host": "evil.example", "port": 443, "allowed": False, "reason": "not in this run's allowlist",
                 "bytes_out": 0, "bytes_in": 0}])
    page = staff_client.get(f"/admin/executions/execution/{execution.pk}/change/").content.decode()
    assert "may reach: pypi.org:443" in page
    assert "<td>pypi.org</td><td>443</td><td>allowed</td><td></td><td>517</td><td>4096</td>" in page
    assert "<td>evil.example</td><td>443</td><td>refused</td><td>not in this run&#x27;s allowlist</td>" in page
