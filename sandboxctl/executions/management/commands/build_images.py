import docker
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from docker.errors import DockerException

from executor.config import LANGUAGES
from executor.images import build_image


class Command(BaseCommand):
    help = "Build the sandbox images (debootstrap + docker import) unless the current ones exist."

    def add_arguments(self, parser):
        parser.add_argument("languages", nargs="*", default=list(LANGUAGES))
        parser.add_argument("--force", action="store_true")
        parser.add_argument("--mirror", default=None, help="Debian mirror URL for debootstrap")

    def handle(self, *args, languages, force, mirror, **options):
        try:
            client = docker.from_env()
            for language in languages:
                build_image(client, language, settings.SANDBOX_IMAGE_CACHE_DIR, force=force, mirror=mirror,
                            say=self.stdout.write)
        except (DockerException, RuntimeError, OSError) as exc:
            raise CommandError(f"image build failed: {exc}") from exc
