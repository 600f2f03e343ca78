"""The Celery app. Sandbox work runs on per-language queues (self-managed pool) and one for SaaS providers."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandboxctl.settings")

app = Celery("sandboxctl")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["sandboxctl.worker"])
# Worker signal handlers (pool start/stop, heartbeat) are connected when the worker imports this module.
app.conf.imports = ("sandboxctl.worker.lifecycle",)
