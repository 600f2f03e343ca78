from django.core.management.base import BaseCommand

from sandboxctl.executions.accounts import service_account
from sandboxctl.executions.models import ApiToken


class Command(BaseCommand):
    help = "Create the non-staff service account NAME if missing and print a new API token for it (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--token-name", default="cli")

    def handle(self, *args, name, token_name, **options):
        account = service_account(name)
        if account.is_staff or account.is_superuser:
            self.stderr.write(f"warning: {name} is a staff account; its token can change provider settings")
        _, key = ApiToken.issue(account, name=token_name)
        self.stdout.write(key)
