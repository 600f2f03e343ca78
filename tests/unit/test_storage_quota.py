"""Issue 30, item 3: code, arguments and input files are stored too, so they count toward the account's storage
quota (40 runs of 1 MiB of code and 1 MiB of arguments added 86 MB that no quota saw). No worker is needed: the
rows are kept from the moment a run is accepted."""

import base64
import json

import pytest
from django.test import Client

from sandboxctl.executions.models import ApiToken, Execution

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


def client_of(django_user_model, name: str) -> Client:
    _, key = ApiToken.issue(django_user_model.objects.create_user(name))
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def submit(client: Client, **fields):
    body = {"language": "python", "code": "def main(blob=''):\n    return 1\n", "wait": False, **fields}
    return client.post("/api/v1/executions", data=json.dumps(body), content_type="application/json")


def test_large_code_and_arguments_fill_the_storage_quota(django_user_model, settings):
    settings.SANDBOX_TENANT_STORAGE_QUOTA = 5 * MIB
    settings.SANDBOX_TENANT_MAX_QUEUED = 100
    attacker = client_of(django_user_model, "hoarder")
    padding = "#" + "x" * 900_000 + "\n"  # under SANDBOX_CODE_MAX_BYTES and SANDBOX_ARGUMENTS_MAX_BYTES
    accepted = [submit(attacker, code=padding + "def main(blob=''):\n    return 1\n", arguments={"blob": "y" * 900_000})
                for _ in range(2)]
    assert [response.status_code for response in accepted] == [202, 202], accepted[-1].content
    assert all(row.stored_bytes > 1_800_000 for row in Execution.objects.all())
    refused = submit(attacker, code=padding + "def main(blob=''):\n    return 1\n", arguments={"blob": "y" * 900_000})
    assert refused.status_code == 429 and "SANDBOX_TENANT_STORAGE_QUOTA" in refused.json()["detail"]
    assert Execution.objects.count() == 2, "the refused request keeps nothing"
    assert submit(client_of(django_user_model, "neighbour")).status_code == 202, "the quota is per account"


def test_input_files_count_toward_the_quota(django_user_model, settings):
    settings.SANDBOX_TENANT_STORAGE_QUOTA = MIB
    caller = client_of(django_user_model, "uploader")
    files = [{"path": "data.bin", "content_b64": base64.b64encode(b"z" * (MIB // 2)).decode()}]
    assert submit(caller, files=files).status_code == 202
    refused = submit(caller, files=files)
    assert refused.status_code == 429, refused.content
