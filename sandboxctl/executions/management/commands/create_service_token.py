from django.core.management.base import BaseCommand

from sandboxctl.executions.accounts import issue_for, service_account


class Command(BaseCommand):
    help = "Create the non-staff service account NAME if missing and print a new API token for it (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--token-name", default="cli")

    def handle(self, *args, name, token_name, **options):
        self.stdout.write(issue_for(service_account(name), token_name, self.stderr))
