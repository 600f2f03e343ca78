from django.conf import settings
from django.db import models


class ProviderActivation(models.Model):
    """Who made which provider active, when, and what its probe said right before — kept for every switch,
    and the only record of an operator activating a provider whose probe had failed ("activate anyway")."""

    provider = models.CharField(max_length=64)
    activated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    activated_at = models.DateTimeField(auto_now_add=True, db_index=True)
    probe_success = models.BooleanField()
    probe_message = models.TextField(blank=True, default="")
    forced = models.BooleanField(default=False, help_text="activated although its probe failed")

    class Meta:
        ordering = ["-activated_at"]

    def __str__(self) -> str:
        return f"{self.provider} at {self.activated_at:%Y-%m-%d %H:%M}"
