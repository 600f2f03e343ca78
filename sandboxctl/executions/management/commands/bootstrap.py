"""Create the `admin` superuser and the bootstrap API token from the environment, if they are set."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from sandboxctl.executions.models import ApiToken, hash_token


class Command(BaseCommand):
    help = "Ensure SANDBOXCTL_ADMIN_PASSWORD's admin user and SANDBOXCTL_BOOTSTRAP_TOKEN's token exist."

    def handle(self, *args, **options):
        password, token_key = settings.SANDBOXCTL_ADMIN_PASSWORD, settings.SANDBOXCTL_BOOTSTRAP_TOKEN
        if not (password or token_key):
            self.stdout.write("no SANDBOXCTL_ADMIN_PASSWORD or SANDBOXCTL_BOOTSTRAP_TOKEN set; nothing to do")
            return
        admin = self._admin(password)
        if token_key and not ApiToken.objects.filter(key_hash=hash_token(token_key)).exists():
            ApiToken.issue(admin, name="bootstrap", key=token_key)
            self.stdout.write("bootstrap API token created")

    def _admin(self, password: str):
        User = get_user_model()
        admin, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True, "email": "admin@localhost"}
        )
        if password and (created or not admin.check_password(password)):
            admin.set_password(password)
            admin.is_staff = admin.is_superuser = True
            admin.save()
            self.stdout.write("admin user ready")
        return admin
