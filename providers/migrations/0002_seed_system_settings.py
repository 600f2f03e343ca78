import json
from pathlib import Path

from django.db import migrations

SEED = Path(__file__).resolve().parents[1] / "system_settings.json"


def seed(apps, schema_editor):
    SystemSetting = apps.get_model("providers", "SystemSetting")
    for row in json.loads(SEED.read_text())["system_settings"]:
        SystemSetting.objects.get_or_create(
            name=row["name"],
            defaults={"value": row["value"], "source": row["source"], "data_type": row["data_type"]},
        )


class Migration(migrations.Migration):
    dependencies = [("providers", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
