from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "sandboxctl.executions"
    label = "executions"
    verbose_name = "Executions"

    def ready(self) -> None:
        from sandboxctl.executions import dispatch  # noqa: F401 - connects admission and callbacks to a run's end
