"""`manage.py bootstrap` on a fresh data folder: settings write nothing; bootstrap creates the key, once."""

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def manage(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("SECRET_KEY", "SANDBOXCTL_SECRET_KEY")}
    env.update(SANDBOXCTL_DATA_DIR=str(data_dir), DATABASE_URL=f"sqlite:///{data_dir / 'db.sqlite3'}",
               CELERY_BROKER_URL="memory://", SANDBOXCTL_ADMIN_PASSWORD="", SANDBOXCTL_BOOTSTRAP_TOKEN="")
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def test_settings_write_nothing_and_bootstrap_creates_a_private_key_once(tmp_path):
    data_dir = tmp_path / "data"
    assert manage(data_dir, "check").returncode == 0
    assert not data_dir.exists(), "loading the settings must not create files"
    first = manage(data_dir, "bootstrap")
    assert first.returncode == 0, first.stderr
    key_file = data_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_text().strip()) >= 50
    assert (data_dir / "static").is_dir()
    key = key_file.read_text()
    assert manage(data_dir, "bootstrap").returncode == 0
    assert key_file.read_text() == key, "a second bootstrap keeps the installation's key"
