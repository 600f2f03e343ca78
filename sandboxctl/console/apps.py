from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator console: the settings page, the staff provider API, the probe and `configure_provider`.

    It sits above both `providers` and `executions` (a probe is a real run), so neither of them imports it. Its
    pages and the admin overrides are in the project's top-level templates/.
    """

    name = "sandboxctl.console"
    label = "console"
    verbose_name = "Console records"
