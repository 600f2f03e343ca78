from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator console: the settings page, the staff provider API, the probe and `configure_provider`.

    It sits above both `providers` and `executions` (a probe is a real run), so neither of them imports it.
    Listed before django.contrib.admin so its admin/index.html overrides the stock one.
    """

    name = "sandboxctl.console"
    label = "console"
    verbose_name = "Console records"
