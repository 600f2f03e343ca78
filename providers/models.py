"""Runtime configuration lives in the database only (seeded from providers/system_settings.json)."""

from django.db import models


class SystemSetting(models.Model):
    class DataType(models.TextChoices):
        STRING = "string"
        JSON = "json"

    name = models.CharField(max_length=128, primary_key=True)
    value = models.TextField(blank=True, default="")
    source = models.CharField(max_length=32, default="variable")
    data_type = models.CharField(max_length=16, choices=DataType.choices, default=DataType.STRING)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WorkerHeartbeat(models.Model):
    """A worker's last sign of life and its warm sandboxes per language (for /readyz and the reconciler)."""

    worker = models.CharField(max_length=255, primary_key=True)
    host = models.CharField(max_length=255)
    pool_depth = models.JSONField(default=dict)  # warm sandboxes per language the worker serves
    pool_failing = models.JSONField(default=dict, blank=True)  # language → why no sandbox can be made now
    runtime = models.JSONField(default=dict, blank=True)  # {"runtime", "version", "platform"} the pool runs on
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.worker
