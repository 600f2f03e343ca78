"""Fair share and quotas per account: one account's long runs never make another's wait, a full queue is a
429 with Retry-After, and so is a request flood."""

import time

from django.core.management import call_command

from conftest import Api
from sandboxctl.executions.models import Execution

SLEEP = "import time\ndef main():\n    time.sleep(6)\n    return 'slept'"


def service_client(live_server, name: str, capsys) -> Api:
    call_command("create_service_token", name)
    return Api(live_server.url, capsys.readouterr().out.strip())


def test_one_accounts_backlog_does_not_delay_another(sandbox_worker, live_server, transactional_db, capsys):
    busy, quiet = service_client(live_server, "busy", capsys), service_client(live_server, "quiet", capsys)
    busy_ids = []
    for _ in range(6):
        response = busy.post("/api/v1/executions", json={"language": "python", "code": SLEEP, "wait": False})
        assert response.status_code == 202
        busy_ids.append(response.json()["id"])
    deadline = time.monotonic() + 20
    while Execution.objects.filter(pk__in=busy_ids, status="running").count() < 2:
        assert time.monotonic() < deadline, "the busy account's first runs never started"
        time.sleep(0.1)
    body = quiet.run("def main():\n    return 'quick'")
    assert body["status"] == "succeeded"
    assert body["queue_wait"] < 1.0, f"the quiet account waited {body['queue_wait']}s behind the busy one"
    in_flight = Execution.objects.filter(pk__in=busy_ids).exclude(status="queued").count()
    held = Execution.objects.filter(pk__in=busy_ids, status="queued", dispatched_at__isnull=True).count()
    assert in_flight <= 2 and held >= 3, "the busy account has at most SANDBOX_TENANT_MAX_CONCURRENT in flight"
    deadline = time.monotonic() + 60
    while Execution.objects.filter(pk__in=busy_ids, status="succeeded").count() < 6:
        assert time.monotonic() < deadline, "held runs are admitted as earlier ones end"
        time.sleep(0.5)


def test_two_busy_accounts_leave_room_for_a_third(sandbox_worker, live_server, transactional_db, capsys):
    """Issue 18: two accounts each holding their share of sleeping runs filled every worker thread."""
    first, second = service_client(live_server, "sleepy-1", capsys), service_client(live_server, "sleepy-2", capsys)
    sleeping = [client.post("/api/v1/executions", json={"language": "python", "code": SLEEP, "wait": False})
                .json()["id"] for client in (first, second, first, second)]
    deadline = time.monotonic() + 20
    while Execution.objects.filter(pk__in=sleeping, status="running").count() < 4:
        assert time.monotonic() < deadline, "the busy accounts' runs never started"
        time.sleep(0.1)
    body = service_client(live_server, "newcomer-3", capsys).run("def main():\n    return 'quick'")
    assert body["status"] == "succeeded"
    assert body["queue_wait"] < 1.0, f"the newcomer waited {body['queue_wait']}s behind two busy accounts"


def test_a_full_queue_is_429_with_retry_after(live_server, transactional_db, capsys, settings):
    settings.SANDBOX_TENANT_MAX_QUEUED = 3
    client = service_client(live_server, "flooder", capsys)
    body = {"language": "python", "code": SLEEP, "wait": False}
    answers = []
    while not answers or answers[-1].status_code == 202 and len(answers) < 10:
        answers.append(client.post("/api/v1/executions", json=body))
    accepted = [answer.status_code for answer in answers].count(202)
    # Three wait; the first SANDBOX_TENANT_MAX_CONCURRENT may already be running, and running is not queued.
    assert 3 <= accepted <= 3 + settings.SANDBOX_TENANT_MAX_CONCURRENT
    assert answers[-1].status_code == 429
    assert int(answers[-1].headers["Retry-After"]) > 0
    assert "SANDBOX_TENANT_MAX_QUEUED" in answers[-1].json()["detail"]
    other = service_client(live_server, "bystander", capsys)
    assert other.post("/api/v1/executions", json=body).status_code == 202, "the quota is per account"


def test_request_rate_is_limited_per_account(live_server, transactional_db, capsys, settings):
    settings.SANDBOX_TENANT_RATE = "5/min"
    client = service_client(live_server, "chatty", capsys)
    statuses = [client.get("/api/v1/executions").status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5 and statuses[5] == 429
    other = service_client(live_server, "calm", capsys)
    assert other.get("/api/v1/executions").status_code == 200


def test_admission_is_max_min_fair_across_accounts(transactional_db, settings, django_user_model):
    """A freed slot goes to the account with the fewest runs in flight, whoever submitted first."""
    from django.utils import timezone

    from sandboxctl.executions import admission

    settings.SANDBOX_ADMISSION_CAPACITY = 5
    settings.SANDBOX_TENANT_MAX_CONCURRENT = 3
    a, b, c = (django_user_model.objects.create_user(name) for name in ("max-min-a", "max-min-b", "max-min-c"))

    def run(user, status="queued", sent=False) -> Execution:
        return Execution.objects.create(provider="self_managed", language="python", code="x", caller=user,
                                        status=status, queue="nowhere", dispatched_at=timezone.now() if sent else None)

    flying_a = [run(a, "running"), run(a, sent=True)]
    run(b, "running")
    held_a = [run(a) for _ in range(3)]  # the oldest held runs are account a's
    held_b = [run(b) for _ in range(2)]
    held_c = run(c)
    admitted = admission.admit()
    assert [execution.pk for execution in admitted] == [held_b[0].pk, held_c.pk], (
        "c (nothing in flight) and b (1) go before a (2), though a's runs waited longest")
    assert admission.admit() == [], "the workers' capacity is full"
    Execution.objects.filter(pk=flying_a[0].pk).update(status="succeeded")
    assert [execution.pk for execution in admission.admit()] == [held_a[0].pk], "now a holds the fewest"
    assert Execution.objects.get(pk=held_a[0].pk).dispatched_at is not None
