#!/usr/bin/env bash
# `make run`: set everything up, then run the stack under supervisord (conf/supervisord.conf): the web
# server, a sandbox worker, a worker for callbacks and housekeeping, the reconciler's scheduler, and — when
# CELERY_BROKER_URL is unset — a private Redis broker on a unix socket in the data folder. A process that
# exits is restarted with backoff while the others keep serving. Ctrl-C stops everything; the worker
# removes every sandbox it made.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
export RAGFLOW_PORT="${RAGFLOW_PORT:-9385}"
export SANDBOXCTL_ADMIN_PASSWORD="${SANDBOXCTL_ADMIN_PASSWORD:-}"

bash scripts/setup.sh

export SANDBOXCTL_ROOT="$PWD"
export SANDBOXCTL_VENV="$PWD/.venv"
export SANDBOXCTL_DATA_DIR="${SANDBOXCTL_DATA_DIR:-$PWD/data}"
# Sandbox worker threads: SANDBOX_WORKER_CONCURRENCY (settings: sized from the pool); WORKER_CONCURRENCY still works.
if [ -n "${WORKER_CONCURRENCY:-}" ]; then export SANDBOX_WORKER_CONCURRENCY="$WORKER_CONCURRENCY"; fi
# The broker's queues come from their one home (executor/config.py).
export SANDBOXCTL_SANDBOX_QUEUES="$(.venv/bin/python -m executor.config sandbox)"
export SANDBOXCTL_IO_QUEUES="$(.venv/bin/python -m executor.config io)"
export SANDBOXCTL_BINDS="--bind 0.0.0.0:$PORT --bind 0.0.0.0:$RAGFLOW_PORT"
if [ -z "${CELERY_BROKER_URL:-}" ]; then
  export SANDBOXCTL_EMBEDDED_BROKER=true
  broker="private Redis on $SANDBOXCTL_DATA_DIR/broker/redis.sock"
else
  export SANDBOXCTL_EMBEDDED_BROKER=false
  broker="$CELERY_BROKER_URL"
fi
mkdir -p "$SANDBOXCTL_DATA_DIR/broker"

pidfile="$SANDBOXCTL_DATA_DIR/supervisord.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "sandboxctl is already running from $SANDBOXCTL_DATA_DIR (supervisord pid $(cat "$pidfile")); stop it first" >&2
  exit 1
fi

cat <<MSG

sandboxctl is starting:
  API          http://localhost:$PORT/api/v1/executions
  API docs     http://localhost:$PORT/api/docs/
  Admin        http://localhost:$PORT/admin/  (user admin; set SANDBOXCTL_ADMIN_PASSWORD to choose its password)
  Readiness    http://localhost:$PORT/readyz
  RAGFlow      http://localhost:$RAGFLOW_PORT  (RAGFlow's sandbox endpoint; no token from SANDBOX_RAGFLOW_TRUSTED_NETWORKS)
  Broker       $broker
A token:       .venv/bin/python manage.py create_token admin
               (or start with SANDBOXCTL_BOOTSTRAP_TOKEN=<value> to fix one)
Try:           curl -s localhost:$PORT/api/v1/executions -H "Authorization: Bearer \$TOKEN" \\
                 -H 'Content-Type: application/json' \\
                 -d '{"language":"python","code":"def main(name):\\n    return name","arguments":{"name":"x"}}'
Processes:     .venv/bin/supervisorctl -s unix://$SANDBOXCTL_DATA_DIR/supervisor.sock status
Ctrl-C stops everything.

MSG
exec .venv/bin/supervisord -n -c conf/supervisord.conf
