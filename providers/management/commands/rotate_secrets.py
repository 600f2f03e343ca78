"""Re-encrypt every stored provider secret with the first key of SANDBOXCTL_ENCRYPTION_KEYS."""

import json

from django.core.management.base import BaseCommand

from providers import encryption
from providers.models import SystemSetting


class Command(BaseCommand):
    help = "Re-encrypt stored provider secrets with the current primary key (after adding a new key first)."

    def handle(self, *args, **options):
        rotated = 0
        for row in SystemSetting.objects.filter(name__startswith="sandbox.", data_type=SystemSetting.DataType.JSON):
            config = json.loads(row.value or "{}")
            changed = False
            for name, value in config.items():
                if isinstance(value, str) and value.startswith(encryption.PREFIX):
                    config[name] = encryption.rotate(value)
                    changed = True
                    rotated += 1
            if changed:
                row.value = json.dumps(config)
                row.save(update_fields=["value", "updated_at"])
        self.stdout.write(f"re-encrypted {rotated} secrets")
