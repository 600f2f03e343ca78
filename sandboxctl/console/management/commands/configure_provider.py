"""Configure a SaaS provider from AGENTRUN_* / E2B_* environment variables: validate, test, save."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from providers import config_store
from providers.registry import PROVIDERS, provider_class
from providers.schema import with_defaults
from sandboxctl.console.models import ProviderActivation
from sandboxctl.console.probe import run_probe

# The only place AGENTRUN_* and E2B_* variables are read: at run time the stored settings are used.
FROM_ENV = {
    "aliyun_codeinterpreter": {
        "access_key_id": "AGENTRUN_ACCESS_KEY_ID",
        "access_key_secret": "AGENTRUN_ACCESS_KEY_SECRET",
        "account_id": "AGENTRUN_ACCOUNT_ID",
        "region": "AGENTRUN_REGION",
        "template_name": "AGENTRUN_TEMPLATE_NAME",
        "timeout": "AGENTRUN_TIMEOUT",
        "data_endpoint": "AGENTRUN_DATA_ENDPOINT",
    },
    "e2b": {
        "api_key": "E2B_API_KEY",
        "domain": "E2B_DOMAIN",
        "template": "E2B_TEMPLATE",
        "timeout": "E2B_TIMEOUT",
        "api_url": "E2B_API_URL",
        "sandbox_url": "E2B_SANDBOX_URL",
    },
}


class Command(BaseCommand):
    help = "Validate, test and save a provider's settings taken from the environment."

    def add_arguments(self, parser):
        parser.add_argument("provider", choices=sorted(FROM_ENV))
        parser.add_argument("--from-env", action="store_true", required=True)
        parser.add_argument("--activate", action="store_true", help="make it the active provider")
        parser.add_argument("--skip-test", action="store_true", help="save without a probe run")

    def handle(self, *args, provider, activate, skip_test, **options):
        config = self.config_from_env(provider)
        errors = provider_class(provider).validate_config(config)
        if errors:
            details = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
            raise CommandError(f"invalid settings for {provider}: {details}")
        if not skip_test:
            outcome = run_probe(provider, config, get_user_model().objects.filter(is_superuser=True).first())
            if not outcome["success"]:
                raise CommandError(f"test run failed: {outcome['message']}")
            self.stdout.write(f"test run succeeded in {outcome['details'].get('execution_time')}s")
        config_store.save(provider, config, activate=activate)
        if activate:
            how = "configure_provider --skip-test" if skip_test else "configure_provider"
            ProviderActivation.objects.create(provider=provider, activated_by=None, probe_success=not skip_test,
                                              probe_message=how, forced=skip_test)
        state = "saved and active" if activate else "saved"
        self.stdout.write(self.style.SUCCESS(f"{PROVIDERS[provider].label}: {state}"))

    def config_from_env(self, provider: str) -> dict:
        fields = {item.name: item for item in provider_class(provider).get_config_schema()}
        config = {}
        for name, variable in FROM_ENV[provider].items():
            value = os.environ.get(variable, "")
            if value == "":
                continue
            config[name] = int(value) if fields[name].type == "integer" and value.isdigit() else value
        return with_defaults(list(fields.values()), config)
