"""Artifacts live in the file store, not the rows: listings stay small, each artifact downloads by URL for its
own account only, an account's stored bytes have a quota, and old executions go with their files."""

import base64
from datetime import timedelta

from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from conftest import Api
from sandboxctl.executions import artifact_store
from sandboxctl.executions.models import Execution
from sandboxctl.worker.tasks import reconcile

TEN_MB = 10_000_000
LARGE = (
    "def main():\n"
    f"    for name in ('a.txt', 'b.txt'):\n"
    f"        open('artifacts/' + name, 'w').write('x' * {TEN_MB})\n"
    "    open('artifacts/small.csv', 'w').write('a,b\\n1,2\\n')\n"
    "    return 'written'"
)
SMALL = "def main():\n    open('artifacts/note.txt', 'w').write('hello')\n    return 1"


def service_client(live_server, name: str, capsys) -> Api:
    call_command("create_service_token", name)
    return Api(live_server.url, capsys.readouterr().out.strip())


def test_listing_stays_small_after_large_artifacts(api):
    for _ in range(2):
        body = api.run(LARGE, timeout=30)
        assert body["status"] == "succeeded", body
    by_name = {artifact["name"]: artifact for artifact in body["artifacts"]}
    assert by_name["a.txt"]["size"] == TEN_MB and "content_b64" not in by_name["a.txt"], "large: by URL only"
    assert base64.b64decode(by_name["small.csv"]["content_b64"]) == b"a,b\n1,2\n", "small: still inline"
    listing = api.get("/api/v1/executions")
    assert listing.status_code == 200
    assert len(listing.content) < 20_000, f"the listing is {len(listing.content)} bytes"
    assert all("content_b64" not in artifact for item in listing.json()["results"] for artifact in item["artifacts"])
    row = Execution.objects.get(pk=body["id"])
    assert row.stored_bytes == len(LARGE) + len("{}") + 2 * TEN_MB + 8 + len('"written"'), "request and answer count"
    assert all("content_b64" not in artifact for artifact in row.artifacts), "no artifact bytes in the row"
    download = api.get(by_name["a.txt"]["url"].removeprefix(api.base_url))
    assert download.status_code == 200 and download.content == b"x" * TEN_MB
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert download.headers["X-Content-Type-Options"] == "nosniff"


def test_an_artifact_downloads_for_its_own_account_only(api, live_server, capsys, anonymous):
    body = api.run(SMALL)
    path = body["artifacts"][0]["url"].removeprefix(api.base_url)
    assert path == f"/api/v1/executions/{body['id']}/artifacts/0"
    assert api.get(path).content == b"hello"
    other = service_client(live_server, "other-tenant", capsys)
    assert other.get(path).status_code == 404, "another account cannot tell the run exists"
    assert anonymous.get(path).status_code == 401
    assert api.get(f"/api/v1/executions/{body['id']}/artifacts/1").status_code == 404


def test_a_full_storage_quota_is_429_naming_it(api, live_server, capsys, settings):
    settings.SANDBOX_TENANT_STORAGE_QUOTA = len(SMALL) + 2
    assert api.run(SMALL)["status"] == "succeeded"  # its code, arguments, result and file: the quota is used up
    refused = api.post("/api/v1/executions", json={"language": "python", "code": SMALL})
    assert refused.status_code == 429
    assert "SANDBOX_TENANT_STORAGE_QUOTA" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    other = service_client(live_server, "roomy-tenant", capsys)
    assert other.run(SMALL)["status"] == "succeeded", "the quota is per account"


def test_executions_older_than_the_retention_go_with_their_files(api, settings):
    settings.SANDBOX_RETENTION_DAYS = 30
    old, recent = api.run(SMALL), api.run(SMALL)
    old_file = Execution.objects.get(pk=old["id"]).artifacts[0]["file"]
    assert artifact_store.store().exists(old_file)
    long_ago = timezone.now() - timedelta(days=31)
    Execution.objects.filter(pk=recent["id"]).update(created_at=long_ago)  # made long ago, ended just now
    Execution.objects.filter(pk=old["id"]).update(created_at=long_ago, finished_at=long_ago)
    assert reconcile()["executions_deleted"] == 1
    assert not Execution.objects.filter(pk=old["id"]).exists()
    assert not artifact_store.store().exists(old_file)
    assert artifact_store.store().exists(Execution.objects.get(pk=recent["id"]).artifacts[0]["file"])


def test_the_admin_purges_one_accounts_data(api, user, live_server, capsys, staff_user):
    mine = api.run(SMALL)
    other = service_client(live_server, "kept-tenant", capsys).run(SMALL)
    mine_file = Execution.objects.get(pk=mine["id"]).artifacts[0]["file"]
    client = Client()
    client.force_login(staff_user)
    response = client.post("/admin/auth/user/", {"action": "purge_account_data", "_selected_action": [user.pk]})
    assert response.status_code == 302
    assert not Execution.objects.filter(caller=user).exists()
    assert not artifact_store.store().exists(mine_file)
    assert Execution.objects.filter(pk=other["id"]).exists(), "only the selected account's data goes"


def test_long_output_is_kept_whole_in_the_store_and_listings_show_its_start(api):
    body = api.run("def main():\n    print('y' * 300000)\n    return 1")
    assert body["status"] == "succeeded"
    assert body["stdout"] == "y" * 300000 + "\n", "the single answer has all of it"
    row = Execution.objects.get(pk=body["id"])
    assert row.stdout_file and len(row.stdout) == artifact_store.OUTPUT_INLINE_CHARS, "the row keeps only its start"
    assert row.stored_bytes == len(row.code) + len("{}") + 300001 + len("1")
    item = api.get("/api/v1/executions").json()["results"][0]
    assert item["id"] == body["id"] and item["stdout"] == "y" * artifact_store.OUTPUT_INLINE_CHARS
    assert api.get(f"/api/v1/executions/{body['id']}").json()["stdout"] == body["stdout"]
    stored = row.stdout_file
    long_ago = timezone.now() - timedelta(days=400)
    Execution.objects.filter(pk=body["id"]).update(created_at=long_ago, finished_at=long_ago)
    reconcile()
    assert not artifact_store.store().exists(stored), "retention deletes output files too"


def test_ragflows_run_keeps_its_inline_shape(api):
    code = ("def main():\n    print('z' * 10000)\n"
            "    open('artifacts/big.txt', 'w').write('b' * 400000)\n    return 1")
    response = api.post("/run", json={"language": "python", "code_b64": base64.b64encode(code.encode()).decode()})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["stdout"] == "z" * 10000 + "\n"
    [artifact] = body["artifacts"]
    assert set(artifact) == {"name", "mime_type", "size", "content_b64"}
    assert base64.b64decode(artifact["content_b64"]) == b"b" * 400000, "larger than the inline limit, still inline"
