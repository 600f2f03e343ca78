#!/usr/bin/env bash
# `make test-fast`: the fast tier (tests/unit) on an in-memory SQLite database, with no root, Docker,
# PostgreSQL, Redis or network. Seconds, for the edit-test loop; `make test` runs it too, with everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export DATABASE_URL="sqlite:///$scratch/fast.sqlite3"
export CELERY_BROKER_URL="memory://"
export SECRET_KEY="test-fast-tier-only"
export SANDBOXCTL_DATA_DIR="$scratch"
mkdir -p "$scratch/static"
.venv/bin/ruff check .
.venv/bin/lint-imports
exec .venv/bin/pytest tests/unit -m "not stack" -p no:cacheprovider "$@"
