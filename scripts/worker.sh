#!/usr/bin/env bash
# `make worker`: one sandbox worker host on its own — its own warm pool, no web, no scheduler, no embedded
# broker — joining the deployment whose PostgreSQL and Redis it is given. Start as many hosts as you like;
# Celery spreads the runs over them, and the reconciler requeues the runs of a host that is lost.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?make worker joins an existing deployment: set DATABASE_URL to its PostgreSQL}"
: "${CELERY_BROKER_URL:?make worker joins an existing deployment: set CELERY_BROKER_URL to its Redis}"
case "$DATABASE_URL" in
  sqlite*) echo "make worker: DATABASE_URL must be the deployment's PostgreSQL, not SQLite" >&2; exit 2 ;;
esac

bash scripts/setup.sh --worker

export SANDBOX_WORKER_HOST="${SANDBOX_WORKER_HOST:-$(hostname)}"
concurrency="${WORKER_CONCURRENCY:-4}"
echo "==> sandbox worker sandboxctl@$SANDBOX_WORKER_HOST ($concurrency threads) on $CELERY_BROKER_URL"
# Ctrl-C (or SIGTERM) is Celery's warm shutdown: runs in flight finish, then every sandbox of this host is removed.
exec .venv/bin/celery -A sandboxctl worker -P threads -c "$concurrency" -n "sandboxctl@$SANDBOX_WORKER_HOST" \
  -Q "$(.venv/bin/python -m executor.config sandbox)" --without-gossip --without-mingle --loglevel INFO
