import docker
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from docker.errors import DockerException

from executor.config import LANGUAGES
from executor.images import build_image, ensure_rootfs


class Command(BaseCommand):
    help = ("Build the sandbox root file systems (debootstrap, cached): extracted for the runsc backend, "
            "imported as Docker images for the docker backend. Current ones are kept.")

    def add_arguments(self, parser):
        parser.add_argument("languages", nargs="*", default=list(LANGUAGES))
        parser.add_argument("--force", action="store_true", help="re-import the Docker images")
        parser.add_argument("--mirror", default=None, help="Debian mirror URL for debootstrap")
        parser.add_argument("--no-docker", action="store_true", help="skip the Docker images")

    def handle(self, *args, languages, force, mirror, no_docker, **options):
        try:
            for language in languages:
                path = ensure_rootfs(language, settings.SANDBOX_IMAGE_CACHE_DIR, settings.SANDBOX_ROOTFS_DIR,
                                     mirror=mirror, say=self.stdout.write)
                self.stdout.write(f"{language} root file system for runsc: {path}")
            if no_docker:
                return
            client = docker.from_env()
            for language in languages:
                build_image(client, language, settings.SANDBOX_IMAGE_CACHE_DIR, force=force, mirror=mirror,
                            say=self.stdout.write)
        except (DockerException, RuntimeError, OSError) as exc:
            raise CommandError(f"image build failed: {exc}") from exc
