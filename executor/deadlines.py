"""One home for a run's deadlines. Everything that waits for a run — the provider itself, a synchronous
request, the reconciler, the broker's redelivery — derives how long from the run's own time limit and what
its provider adds, here, so they cannot drift apart (a SaaS run once got 15 s of synchronous wait past its
limit while the provider could take 30).

    acquire   waiting for a sandbox (the self-managed pool; SaaS creation is inside its overhead)
    run       the code's own time limit
    grace     a session's cell only: the interrupt at the limit, and the time it gets to stop
    overhead  what the provider may take past the limit before it gives up on its own (the sandbox's kill
              grace and drain, or a SaaS service's create/execute/delete round trips)
    report    recording the end (database, notice)

It lives in the executor, the lowest layer, so the sandbox, the providers, the domain, the worker and the
settings all read the same numbers. The provider ends every run by `provider_deadline`; a synchronous wait
lasts `wait`, always longer; the reconciler ends a run still `running` after `overdue` past its start; the
broker redelivers an unacknowledged message only after `visibility_timeout(...)`, longer than any of them.
"""

from dataclasses import dataclass

from executor.runner.wire import INTERRUPT_GRACE

REPORT_MARGIN = 5.0
# The self-managed sandbox: the supervisor stops the child at the limit, the worker kills the sandbox
# SANDBOX_KILL_GRACE later, then drains what it wrote (executor/sandbox.py).
SANDBOX_KILL_GRACE = 0.6
SANDBOX_DRAIN = 1.0
# A SaaS service: creating a sandbox, uploading the driver, executing and deleting, with bounded retries.
SAAS_OVERHEAD = 30.0
# One call to sandboxctl's session host in a SaaS sandbox (providers/saas_sessions.py): its way there and back.
SAAS_CALL_RETURN = 2.0
# Requests to an open sandbox that are not cells: opening it (its input files written by the keeper) and one
# file request. The keeper is given up on after a few seconds without progress (runner/processes.py), so
# these bound only a large file moving through the sandbox's pipes.
OPEN_WAIT = 60.0
FILE_WAIT = 90.0


@dataclass(frozen=True)
class Budget:
    acquire: float
    run: float
    overhead: float
    report: float = REPORT_MARGIN
    grace: float = 0.0  # a session's cell past its limit is interrupted and may take this long to stop

    @property
    def sandbox_deadline(self) -> float:
        """Seconds from sending the code until the worker kills a sandbox that has not answered."""
        return self.run + self.grace + SANDBOX_KILL_GRACE

    @property
    def provider_deadline(self) -> float:
        """Seconds from the worker taking the run until the provider has ended it, whatever happens."""
        return self.acquire + self.run + self.grace + self.overhead

    @property
    def wait(self) -> float:
        """How long a synchronous request waits for a run that started at once: past the provider's deadline."""
        return self.provider_deadline + self.report

    def overdue(self, grace: float) -> float:
        """Seconds after its start past which the reconciler ends a run still `running` (SANDBOX_OVERDUE_GRACE)."""
        return self.wait + grace


def budget(run: float, acquire: float, overhead: float) -> Budget:
    """A one-shot run's: it waits for a sandbox, then is stopped at its limit."""
    return Budget(acquire=acquire, run=run, overhead=overhead)


def cell_budget(run: float, overhead: float) -> Budget:
    """A session's cell: its sandbox is there already, and past its limit it is interrupted, then stopped."""
    return Budget(acquire=0.0, run=run, overhead=overhead, grace=INTERRUPT_GRACE)


def visibility_timeout(longest_run: float, acquire: float, grace: float) -> int:
    """The broker redelivers a message not acknowledged in this long: well past the longest run's overdue
    point for any provider, so a slow run is never delivered twice while it runs."""
    worst = budget(longest_run, max(acquire, longest_run), max(SAAS_OVERHEAD, SANDBOX_KILL_GRACE + SANDBOX_DRAIN))
    return int(max(3600, 2 * worst.overdue(grace)))
