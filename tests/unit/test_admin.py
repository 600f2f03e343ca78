"""Execution history and API tokens in Django admin."""

import pytest
from django.contrib.auth import get_user_model

from sandboxctl.executions.models import ApiToken, Execution


@pytest.fixture
def staff_client(client, db):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "root-password-1")
    client.force_login(admin)
    return client


@pytest.fixture
def execution(db):
    return Execution.objects.create(
        provider="self_managed", language="python", code="def main():\n    return 'zz-visible'",
        code_sha256="ab" * 32, arguments={"flag": True}, status="succeeded", stdout="printed-line",
        result_present=True, result={"answer": "zz-visible"}, execution_time=0.012,
        artifacts=[{"name": "plot.png", "mime_type": "image/png", "size": 10, "content_b64": ""}],
    )


def test_changelist_renders_with_filters(staff_client, execution):
    response = staff_client.get("/admin/executions/execution/")
    assert response.status_code == 200
    content = response.content.decode()
    assert str(execution.id) in content
    assert "By status" in content and "By language" in content and "By provider" in content


def test_changelist_filters_and_searches(staff_client, execution):
    changelist = "/admin/executions/execution/"
    assert str(execution.id) in staff_client.get(changelist, {"status__exact": "succeeded"}).content.decode()
    assert str(execution.id) not in staff_client.get(changelist, {"status__exact": "failed"}).content.decode()
    found = staff_client.get("/admin/executions/execution/", {"q": "ab" * 32}).content.decode()
    assert str(execution.id) in found


def test_detail_is_read_only_and_shows_everything(staff_client, execution):
    response = staff_client.get(f"/admin/executions/execution/{execution.id}/change/")
    assert response.status_code == 200
    content = response.content.decode()
    for expected in ("zz-visible", "printed-line", "plot.png", "&quot;flag&quot;: true"):
        assert expected in content
    assert 'name="_save"' not in content


def test_token_is_shown_once_when_added_in_admin(staff_client):
    user = get_user_model().objects.get(username="root")
    response = staff_client.post("/admin/executions/apitoken/add/", {"user": user.pk, "name": "ci"}, follow=True)
    assert response.status_code == 200
    message = next(str(m) for m in response.context["messages"] if "shown once" in str(m))
    key = message.rsplit(" ", 1)[1]
    token = ApiToken.objects.get(name="ci")
    assert token.key_hash != key and token.prefix == key[:8]


def test_non_staff_cannot_open_admin(client, db):
    get_user_model().objects.create_user("plain", password="plain-password-1")
    client.login(username="plain", password="plain-password-1")
    assert client.get("/admin/executions/execution/").status_code == 302


def test_system_settings_and_heartbeats_are_read_only(staff_client):
    from providers.models import SystemSetting, WorkerHeartbeat

    SystemSetting.objects.update_or_create(name="sandbox.provider_type", defaults={"value": "self_managed"})
    WorkerHeartbeat.objects.create(worker="w#1", host="h", seen_at="2026-01-01T00:00:00Z")
    assert staff_client.get("/admin/providers/systemsetting/add/").status_code == 403
    edit = staff_client.post("/admin/providers/systemsetting/sandbox.provider_type/change/",
                             {"name": "sandbox.provider_type", "value": "typo", "data_type": "string"})
    assert edit.status_code == 403
    assert staff_client.post("/admin/providers/systemsetting/sandbox.provider_type/delete/",
                             {"post": "yes"}).status_code == 403
    assert SystemSetting.objects.get(name="sandbox.provider_type").value == "self_managed"
    assert staff_client.post("/admin/providers/workerheartbeat/w%231/change/", {"host": "x"}).status_code == 403
    assert staff_client.get("/admin/providers/workerheartbeat/add/").status_code == 403
    assert staff_client.get("/admin/providers/systemsetting/").status_code == 200, "still readable"
