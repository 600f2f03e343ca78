"""Accounts: agents use non-staff service accounts; staff-only endpoints refuse them; each sees its own runs."""

from django.core.management import call_command

from conftest import Api
from sandboxctl.executions.models import ApiToken, Execution, hash_token

STAFF_ONLY = [("GET", "/api/v1/providers"), ("GET", "/api/v1/providers/e2b/schema"),
              ("GET", "/api/v1/sandbox/config"), ("PUT", "/api/v1/sandbox/config"), ("POST", "/api/v1/sandbox/test")]


def test_the_bootstrap_token_belongs_to_a_non_staff_agent(transactional_db, settings, django_user_model):
    settings.SANDBOXCTL_BOOTSTRAP_TOKEN = "boot-token-123"
    settings.SANDBOXCTL_ADMIN_PASSWORD = "admin-password-1"
    call_command("bootstrap")
    token = ApiToken.objects.select_related("user").get(key_hash=hash_token("boot-token-123"))
    assert token.user.username == "agent"
    assert not token.user.is_staff and not token.user.is_superuser
    assert not token.user.has_usable_password()
    assert django_user_model.objects.get(username="admin").is_superuser


def test_a_bootstrap_token_an_older_version_gave_the_admin_moves_to_the_agent(transactional_db, settings,
                                                                             django_user_model):
    admin = django_user_model.objects.create_superuser("admin", "a@example.com", "admin-password-1")
    ApiToken.issue(admin, name="bootstrap", key="old-boot-token")
    settings.SANDBOXCTL_BOOTSTRAP_TOKEN = "old-boot-token"
    call_command("bootstrap")
    assert ApiToken.objects.get(key_hash=hash_token("old-boot-token")).user.username == "agent"


def test_create_service_token_makes_the_account_and_prints_a_working_key(live_server, transactional_db, capsys):
    call_command("create_service_token", "pipeline-7")
    key = capsys.readouterr().out.strip()
    token = ApiToken.objects.select_related("user").get(key_hash=hash_token(key))
    assert token.user.username == "pipeline-7" and not token.user.is_staff
    call_command("create_service_token", "pipeline-7")
    assert ApiToken.objects.filter(user=token.user).count() == 2, "a second key for the same account"
    client = Api(live_server.url, key)
    assert client.get("/api/v1/executions").status_code == 200
    for method, path in STAFF_ONLY:
        assert client.request(method, path, json={}).status_code == 403, path


def test_each_account_sees_only_its_own_executions(api, live_server, transactional_db, capsys):
    call_command("create_service_token", "other-agent")
    other = Api(live_server.url, capsys.readouterr().out.strip())
    mine = api.run("def main():\n    return 'mine'")
    theirs = other.run("def main():\n    return 'theirs'")
    assert [item["id"] for item in api.get("/api/v1/executions").json()["results"]] == [mine["id"]]
    assert api.get(f"/api/v1/executions/{theirs['id']}").status_code == 404
    assert api.post(f"/api/v1/executions/{theirs['id']}/cancel").status_code == 404
    assert Execution.objects.count() == 2
