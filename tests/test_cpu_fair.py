"""CPU by account, not by run: two accounts burning CPU get about half the host each whatever their run
counts, and a third account's trivial run, and /healthz, still answer promptly (issue 18's "Done when")."""

import hashlib
import time
from pathlib import Path

import requests
from django.core.management import call_command
from django.db import connection

from conftest import Api
from executor.runsc_sandbox import CGROUP_ROOT, account_group, site_key
from sandboxctl.executions.models import Execution

BURN_SECONDS = 8
# Burns CPU for a while and counts its loop turns per half second of wall time, so the test can compare
# the accounts' throughput over the same moments.
BURN = (
    "import time\n"
    "def main(seconds):\n"
    "    turns = {}\n"
    "    end = time.time() + seconds\n"
    "    while True:\n"
    "        now = time.time()\n"
    "        if now >= end:\n"
    "            return turns\n"
    "        key = str(int(now * 2))\n"
    "        turns[key] = turns.get(key, 0) + 1\n"
)


def service_client(live_server, name: str, capsys) -> tuple[Api, int]:
    from django.contrib.auth import get_user_model

    call_command("create_service_token", name)
    client = Api(live_server.url, capsys.readouterr().out.strip())
    return client, get_user_model().objects.get(username=name).pk


def burn(client: Api) -> str:
    response = client.post("/api/v1/executions", json={"language": "python", "code": BURN, "wait": False,
                                                       "arguments": {"seconds": BURN_SECONDS}, "timeout": 30})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def worker_site() -> str:
    """The site of the test worker, which runs on the test database (settings.SANDBOX_SITE's derivation)."""
    database = connection.settings_dict
    name = f"{database['ENGINE']}|{database.get('HOST')}|{database.get('PORT')}|{database['NAME']}"
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def account_cgroup(account_id: int) -> Path:
    folder = CGROUP_ROOT / ("cpu" if not (CGROUP_ROOT / "cgroup.controllers").exists() else "") / "sandboxctl"
    return folder / account_group(site_key(worker_site()), str(account_id))


def test_two_cpu_burning_accounts_share_the_host_and_a_third_is_served(sandbox_worker, live_server,
                                                                       transactional_db, capsys, settings):
    settings.SANDBOX_TENANT_MAX_CONCURRENT = 3
    (one, one_id), (two, two_id) = (service_client(live_server, name, capsys) for name in ("burner-1", "burner-2"))
    third, _ = service_client(live_server, "bystander-3", capsys)
    runs = {one_id: [burn(one)], two_id: [burn(two), burn(two), burn(two)]}
    everything = runs[one_id] + runs[two_id]
    deadline = time.monotonic() + 30
    while Execution.objects.filter(pk__in=everything, status="running").count() < len(everything):
        assert time.monotonic() < deadline, "the burning runs never all started"
        time.sleep(0.1)
    # "running" is claimed; a run whose sandbox is still being made (refilled under this load) is not
    # burning yet. Each run's sandbox sits under its account's cgroup once its job starts.
    placed = {one_id: 1, two_id: 3}
    started = time.monotonic()
    while (sandboxes := {account: len(list(account_cgroup(account).glob("sbx.*"))) for account in runs}) != placed:
        assert time.monotonic() - started < 20, f"sandboxes placed: {sandboxes}"
        time.sleep(0.1)
    time.sleep(1.0)

    started = time.monotonic()
    assert requests.get(live_server.url + "/healthz", timeout=5).status_code == 200
    healthz = time.monotonic() - started
    started = time.monotonic()
    body = third.run("def main():\n    return 'quick'")
    latency = time.monotonic() - started
    assert body["status"] == "succeeded", body
    assert healthz < 1.0, f"/healthz took {healthz:.2f}s while two accounts burned CPU"
    assert latency < 3.0, f"a third account's trivial run took {latency:.2f}s while two accounts burned CPU"

    deadline = time.monotonic() + 60
    while Execution.objects.filter(pk__in=everything, status="succeeded").count() < len(everything):
        assert time.monotonic() < deadline, "the burning runs did not finish"
        time.sleep(0.5)
    turns = {pk: Execution.objects.get(pk=pk).result for pk in everything}
    # Whole half-seconds in which all four burned, leaving out the first and last of them.
    common = sorted(set.intersection(*(set(counts) for counts in turns.values())))[1:-1]
    assert len(common) >= 6, f"the runs overlapped only {len(common)} half-seconds"
    total = {account: sum(turns[pk][key] for pk in pks for key in common) for account, pks in runs.items()}
    ratio = total[one_id] / total[two_id]
    # Shared per run, one run against three gets a quarter of the host (ratio 1/3; measured 0.21 here with
    # the account cgroups disabled); per account, half (1). Other load on the host lands unevenly on the two
    # CPUs and moves the ratio: measured 0.37 to 0.93 with a load average of 7 to 18 on 2 cores from other
    # test suites. The bound is the lowest of those, above what sharing per run gives.
    assert ratio > 0.3, f"the one-run account got {ratio:.2f} of the two-run account's CPU: {total}"
