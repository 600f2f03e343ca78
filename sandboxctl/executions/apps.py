from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "sandboxctl.executions"
    label = "executions"
    verbose_name = "Executions"

    def ready(self) -> None:
        from sandboxctl.executions import tasks  # noqa: F401 - connects the receiver that sends callbacks
