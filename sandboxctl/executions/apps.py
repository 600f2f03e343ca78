from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "sandboxctl.executions"
    label = "executions"
    verbose_name = "Executions"
