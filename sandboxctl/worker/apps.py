from django.apps import AppConfig


class WorkerConfig(AppConfig):
    """The worker side: Celery tasks, the worker lifecycle, the broker transport, callback delivery, the spool,
    and the worker host's management commands (reconcile_executions, build_images)."""

    name = "sandboxctl.worker"
    label = "worker"
    verbose_name = "Worker"
