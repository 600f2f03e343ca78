"""Create the `admin` superuser and the agents' bootstrap API token from the environment, if they are set."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from sandboxctl.executions.accounts import service_account
from sandboxctl.executions.models import ApiToken, hash_token

AGENT_ACCOUNT = "agent"


class Command(BaseCommand):
    help = ("Ensure SANDBOXCTL_ADMIN_PASSWORD's admin user exists, and that SANDBOXCTL_BOOTSTRAP_TOKEN is a token "
            "of the non-staff service account 'agent'.")

    def handle(self, *args, **options):
        password, token_key = settings.SANDBOXCTL_ADMIN_PASSWORD, settings.SANDBOXCTL_BOOTSTRAP_TOKEN
        if not (password or token_key):
            self.stdout.write("no SANDBOXCTL_ADMIN_PASSWORD or SANDBOXCTL_BOOTSTRAP_TOKEN set; nothing to do")
            return
        if password:
            self._admin(password)
        if token_key:
            self._bootstrap_token(token_key)

    def _bootstrap_token(self, key: str) -> None:
        agent = service_account(AGENT_ACCOUNT)
        token = ApiToken.objects.filter(key_hash=hash_token(key)).first()
        if token is None:
            ApiToken.issue(agent, name="bootstrap", key=key)
            self.stdout.write(f"bootstrap API token created for the service account {AGENT_ACCOUNT!r}")
        elif token.user_id != agent.pk:
            # Earlier versions gave this token to the superuser: an agent's token must not change settings.
            ApiToken.objects.filter(pk=token.pk).update(user=agent)
            self.stdout.write(f"bootstrap API token moved to the service account {AGENT_ACCOUNT!r}")

    def _admin(self, password: str) -> None:
        User = get_user_model()
        admin, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True, "email": "admin@localhost"}
        )
        if created or not admin.check_password(password) or not admin.is_superuser:
            admin.set_password(password)
            admin.is_staff = admin.is_superuser = True
            admin.save()
            self.stdout.write("admin user ready")
