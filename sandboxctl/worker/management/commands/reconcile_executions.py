from django.core.management.base import BaseCommand

from sandboxctl.worker.tasks import reconcile


class Command(BaseCommand):
    help = "Requeue or end runs whose worker vanished, and end queued runs nobody picked up."

    def handle(self, *args, **options):
        self.stdout.write(str(reconcile(judge=True)))
