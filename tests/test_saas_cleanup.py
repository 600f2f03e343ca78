"""No SaaS sandbox outlives its run: the execution records the sandbox as soon as it is known, and the
reconciler deletes what a failed delete or a lost create answer left behind, until the service agrees."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from providers import config_store
from providers import saas as saas_module
from providers.base import Limits, ProviderError, Status
from sandboxctl.executions.models import Execution, SandboxRecord
from sandboxctl.worker.tasks import release_leftover_sandboxes, run_id

LIMITS = Limits(timeout=3, memory_mb=256, output_limit=1024)
HELLO = "def main():\n    return 1"


@pytest.fixture
def stored(saas, transactional_db):
    """The provider's settings saved, as the reconciler builds providers from storage."""
    config_store.save(saas.name, saas.settings(), activate=False)
    return saas


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(saas_module, "BACKOFF", (0.05, 0.1))


def running_execution(provider_name: str) -> Execution:
    return Execution.objects.create(provider=provider_name, language="python", code=HELLO, code_sha256="0" * 64,
                                    status=Status.RUNNING, attempts=1, limits={"timeout": 3, "memory_mb": 256,
                                                                                "output_limit": 1024})


def end(execution: Execution) -> None:
    Execution.objects.filter(pk=execution.pk).update(status=Status.SANDBOX_ERROR,
                                                     finished_at=timezone.now() - timedelta(minutes=5))


def released(execution: Execution) -> bool:
    return Execution.objects.get(pk=execution.pk).sandbox_released


def test_a_clean_run_records_its_sandbox_and_its_release(stored):
    execution = running_execution(stored.name)
    result = stored.provider().run(HELLO, "python", LIMITS, {}, run_id=run_id(execution),
                                   ledger=SandboxRecord(execution.pk))
    row = Execution.objects.get(pk=execution.pk)
    assert result.status == Status.SUCCEEDED and row.sandbox_id == result.sandbox_id and row.sandbox_released


def test_a_failed_delete_is_retried_by_the_reconciler_until_it_succeeds(stored):
    stored.fake.fail("delete", status=500)
    execution = running_execution(stored.name)
    result = stored.provider().run(HELLO, "python", LIMITS, {}, run_id=run_id(execution),
                                   ledger=SandboxRecord(execution.pk))
    assert result.status == Status.SUCCEEDED, "a failed delete does not change what the code did"
    end(execution)
    assert stored.alive() == [result.sandbox_id] and not released(execution)
    assert release_leftover_sandboxes(timezone.now()) == 0, "still failing: kept for the next round"
    assert not released(execution)
    del stored.fake.faults["delete"]
    assert release_leftover_sandboxes(timezone.now()) == 1
    assert stored.alive() == [] and released(execution)


def test_a_create_whose_answer_was_lost_is_found_by_its_tag_and_deleted(stored, monkeypatch):
    monkeypatch.setattr(saas_module, "REQUEST_TIMEOUT", 0.5)
    stored.fake.fail("create", status=None, delay=3.0)  # the service creates it, but answers too late
    execution = running_execution(stored.name)
    with pytest.raises(ProviderError) as caught:
        stored.provider().run(HELLO, "python", LIMITS, {}, run_id=run_id(execution),
                              ledger=SandboxRecord(execution.pk))
    assert caught.value.code == "service_unavailable"
    deadline = time.monotonic() + 8
    while not stored.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(stored.alive()) == 1, "the late create made one sandbox (idempotent retries)"
    assert not released(execution) and Execution.objects.get(pk=execution.pk).sandbox_id == ""
    end(execution)
    del stored.fake.faults["create"]
    assert release_leftover_sandboxes(timezone.now()) == 1
    assert stored.alive() == [] and released(execution)


def test_a_sandbox_the_service_no_longer_knows_counts_as_deleted(stored):
    execution = running_execution(stored.name)
    Execution.objects.filter(pk=execution.pk).update(sandbox_id="already-gone", sandbox_released=False)
    end(execution)
    assert release_leftover_sandboxes(timezone.now()) == 1 and released(execution)


def test_a_run_still_in_its_grace_period_is_left_to_its_worker(stored):
    execution = running_execution(stored.name)
    Execution.objects.filter(pk=execution.pk).update(sandbox_id="in-flight", sandbox_released=False,
                                                     status=Status.SUCCEEDED, finished_at=timezone.now())
    assert release_leftover_sandboxes(timezone.now()) == 0 and not released(execution)
