"""Prepare an installation: its secret key file and static folder, then the `admin` superuser and the
agents' bootstrap API token from the environment, if they are set. Safe to run at every start."""

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand
from django.core.management.utils import get_random_secret_key

from sandboxctl.executions.accounts import service_account
from sandboxctl.executions.models import ApiToken, hash_token

AGENT_ACCOUNT = "agent"


class Command(BaseCommand):
    help = ("Ensure SANDBOXCTL_ADMIN_PASSWORD's admin user exists, and that SANDBOXCTL_BOOTSTRAP_TOKEN is a token "
            "of the non-staff service account 'agent'.")

    def handle(self, *args, **options):
        self._data_dir()
        password, token_key = settings.SANDBOXCTL_ADMIN_PASSWORD, settings.SANDBOXCTL_BOOTSTRAP_TOKEN
        if not (password or token_key):
            self.stdout.write("no SANDBOXCTL_ADMIN_PASSWORD or SANDBOXCTL_BOOTSTRAP_TOKEN set; nothing to do")
            return
        if password:
            self._admin(password)
        if token_key:
            self._bootstrap_token(token_key)

    def _data_dir(self) -> None:
        settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
        key_file = settings.SECRET_KEY_FILE
        try:
            settings.SECRET_KEY  # noqa: B018 - set from the environment or read from key_file
            return
        except ImproperlyConfigured:
            pass
        # A stable per-installation key, so sessions and stored secrets survive restarts without a key in
        # the repository. Created with its final mode: never readable by others, not even for a moment.
        key_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(get_random_secret_key())
        settings.SECRET_KEY = key_file.read_text().strip()
        self.stdout.write(f"secret key created in {key_file}")

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
