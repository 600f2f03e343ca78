from django.apps import AppConfig


class EgressConfig(AppConfig):
    """Who may reach what: each account's egress ceiling, the default for new accounts, the tallies behind
    /metrics, and `set_egress`. The mechanism (proxy, relay, channels) is the executor's; see egress_proxy.py."""

    name = "sandboxctl.egress"
    label = "egress"
    verbose_name = "Egress"

    def ready(self) -> None:
        from sandboxctl.egress import policy  # noqa: F401 - new accounts get the default ceiling (post_save)
