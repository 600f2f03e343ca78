from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from sandboxctl.executions.accounts import issue_for


class Command(BaseCommand):
    help = "Issue an API token for a user and print it (it is stored hashed and cannot be shown again)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")

    def handle(self, *args, username, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        self.stdout.write(issue_for(user, name, self.stderr))
