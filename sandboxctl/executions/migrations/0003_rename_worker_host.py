from django.db import migrations


class Migration(migrations.Migration):
    """`worker_host` held a Celery worker instance name (node#boot id), not a host."""

    dependencies = [("executions", "0002_outbox_and_queue")]

    operations = [migrations.RenameField(model_name="execution", old_name="worker_host", new_name="worker")]
