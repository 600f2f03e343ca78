"""`pip install .` is a complete install: a wheel, unpacked where no source tree is, renders every page from the
top-level templates/ it carries, and ships every static file; the Docker image copies what its install needs."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sandboxctl", "providers", "executor")

RENDER = """
import django, sys
from django.template.loader import get_template
django.setup()
import sandboxctl
print(sandboxctl.__file__)
for name in sys.argv[1:]:
    print(get_template(name).origin.name)
"""


def build_wheel(target: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    return next(target.glob("sandboxctl-*.whl"))


def test_an_installed_wheel_renders_every_template_and_ships_every_static_file(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    templates = sorted(path.relative_to(ROOT / "templates").as_posix() for path in (ROOT / "templates").rglob("*.html"))
    assert templates and {f"sandboxctl/templates/{name}" for name in templates} <= shipped
    statics = {path.relative_to(ROOT).as_posix() for package in PACKAGES
               for path in (ROOT / package).rglob("static/**/*") if path.is_file()}
    assert statics and statics <= shipped, statics - shipped

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "DJANGO_SETTINGS_MODULE": "sandboxctl.settings",
           "SANDBOXCTL_DATA_DIR": str(tmp_path / "data"), "SECRET_KEY": "packaging-test-only",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}", "CELERY_BROKER_URL": "memory://"}
    rendered = subprocess.run([sys.executable, "-c", RENDER, *templates], cwd=tmp_path, env=env, check=True,
                              capture_output=True, text=True, timeout=120).stdout.split()
    assert rendered[0].startswith(str(site)), "the installed copy is the one imported, not the source tree"
    assert all(origin.startswith(str(site / "sandboxctl" / "templates")) for origin in rendered[1:]), rendered


def test_the_image_copies_the_templates_and_the_package_list():
    copied = [source for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
              for source in line.split()[1:-1]]
    assert {"templates", "setup.py", "pyproject.toml", *PACKAGES} <= set(copied), copied
