"""One home for a run's deadlines (executor/deadlines.py): for every provider and every limit the server allows,
the synchronous wait outlives the provider's own deadline, the reconciler's overdue point outlives the wait, and
the broker's redelivery comes after all of them."""

from dataclasses import asdict

import pytest
from django.conf import settings

from executor.deadlines import visibility_timeout
from providers.base import Limits, RequestedLimits
from providers.registry import PROVIDERS
from sandboxctl.executions.models import Execution
from sandboxctl.executions.service import wait_budget

TIMEOUTS = [0.001, 0.5, 1.0, 10.0, 30.0, 60.0]


@pytest.mark.parametrize("name", sorted(PROVIDERS))
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_the_synchronous_wait_outlives_the_providers_deadline(name, timeout, db):
    provider = PROVIDERS[name]()
    limits = provider.clamp(RequestedLimits(timeout=timeout))
    budget = provider.budget(limits)
    assert budget.provider_deadline >= limits.timeout + provider.run_overhead
    execution = Execution(provider=name, limits={"timeout": limits.timeout, "memory_mb": limits.memory_mb,
                                                 "output_limit": limits.output_limit})
    assert wait_budget(execution) > budget.provider_deadline, "wait=true answers a run that ends"
    assert budget.overdue(settings.SANDBOX_OVERDUE_GRACE) > wait_budget(execution)
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > budget.overdue(
        settings.SANDBOX_OVERDUE_GRACE), "no redelivery while a run may still be running"


def test_a_saas_run_is_waited_for_past_its_overhead():
    # The bug this home fixed: a SaaS run got timeout + 15 s of synchronous wait while it may take timeout + 30.
    saas = next(cls() for cls in PROVIDERS.values() if cls.queue == "sandbox.saas")
    budget = saas.budget(Limits(timeout=10.0, memory_mb=256, output_limit=1024))
    assert budget.wait > 10.0 + saas.run_overhead


def test_the_self_managed_run_may_wait_for_a_sandbox_as_long_as_its_own_limit():
    budget = PROVIDERS["self_managed"]().budget(Limits(timeout=45.0, memory_mb=256, output_limit=1024))
    assert budget.acquire == 45.0


def test_the_broker_never_redelivers_before_the_longest_run_is_overdue():
    assert visibility_timeout(600.0, 10.0, 60.0) > 2 * 600


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_a_cells_wait_outlives_its_interrupt_and_kill(name, db):
    from executor.deadlines import INTERRUPT_GRACE, SANDBOX_KILL_GRACE

    provider = PROVIDERS[name]()
    limits = provider.clamp(RequestedLimits(timeout=5))
    cell = Execution(provider=name, session_id="00000000-0000-0000-0000-000000000001", limits=asdict(limits))
    budget = provider.budget(limits, cell=True)
    assert budget.sandbox_deadline == limits.timeout + INTERRUPT_GRACE + SANDBOX_KILL_GRACE
    assert wait_budget(cell) > budget.provider_deadline >= limits.timeout + INTERRUPT_GRACE
