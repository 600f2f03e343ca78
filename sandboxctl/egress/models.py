"""Egress records: each account's ceiling, the default for new accounts, and counters for /metrics."""

from django.conf import settings
from django.db import models


class AccountEgress(models.Model):
    """An account's ceiling: what its runs and sessions may ask to reach (entries and preset names, as staff
    wrote them; presets are expanded when used, so a preset the operator changes changes every ceiling
    naming it). Empty, or no row: nowhere."""

    account = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                   related_name="egress_ceiling")
    allow = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "egress ceiling"
        verbose_name_plural = "egress ceilings"

    def __str__(self) -> str:
        return f"{self.account}: {', '.join(self.allow) or 'nowhere'}"


class EgressDefault(models.Model):
    """The ceiling a new account starts with (one row). Changing it changes no existing account's."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    allow = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "egress default for new accounts"
        verbose_name_plural = "egress default for new accounts"

    def __str__(self) -> str:
        return f"new accounts: {', '.join(self.allow) or 'nowhere'}"


class EgressTally(models.Model):
    """Connections through the egress proxy, and their bytes, by account and outcome (allowed, refused):
    counted once per run as its end is recorded (/metrics reads them)."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=8)
    connections = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)
    bytes_in = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "outcome"], name="one_tally_per_account_outcome")]

    def __str__(self) -> str:
        return f"{self.account} {self.outcome}: {self.connections}"
