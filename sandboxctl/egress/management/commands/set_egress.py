"""`manage.py set_egress ACCOUNT [ENTRY ...]`: set an account's egress ceiling (no entry: nowhere)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from sandboxctl.egress import policy


class Command(BaseCommand):
    help = ("Set ACCOUNT's egress ceiling: what its runs and sessions may ask to reach. Entries: hosts "
            "(files.example.com), wildcards (*.github.com), addresses or networks (203.0.113.0/24), each with an "
            "optional :PORT or :* (without one, 80 and 443), or presets (pypi, npm, SANDBOX_EGRESS_PRESETS). "
            "No entry: nowhere. --default sets what new accounts start with instead.")

    def add_arguments(self, parser):
        parser.add_argument("account", nargs="?", help="the account's user name (not with --default)")
        parser.add_argument("entries", nargs="*")
        parser.add_argument("--default", action="store_true", help="set the ceiling new accounts start with")

    def handle(self, *args, account, entries, default, **options):
        try:
            if default:
                entries = ([account] if account else []) + list(entries)
                kept = policy.set_default(entries)
                self.stdout.write(f"new accounts may reach: {', '.join(kept) or 'nowhere'}")
                return
            if not account:
                raise CommandError("name the account (or give --default)")
            user = get_user_model().objects.filter(username=account).first()
            if user is None:
                raise CommandError(f"no account named {account!r}")
            kept = policy.set_ceiling(user, list(entries))
        except policy.EntryError as exc:
            raise CommandError(f"bad entry: {exc}") from exc
        self.stdout.write(f"{account} may reach: {', '.join(kept) or 'nowhere'}")
