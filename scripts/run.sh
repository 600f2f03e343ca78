#!/usr/bin/env bash
# `make run`: set everything up, then serve the API on $PORT and run a Celery worker with the sandbox
# pool. Ctrl-C stops both, and the worker removes every sandbox it made.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
export SANDBOXCTL_ADMIN_PASSWORD="${SANDBOXCTL_ADMIN_PASSWORD:-}"

bash scripts/setup.sh

worker_name="sandboxctl@$(hostname)"
.venv/bin/celery -A sandboxctl worker -P threads -c "${WORKER_CONCURRENCY:-4}" -B \
  -s data/celerybeat-schedule -n "$worker_name" \
  -Q sandbox.python,sandbox.nodejs,sandbox.saas,control --loglevel INFO &
worker=$!
.venv/bin/gunicorn sandboxctl.wsgi --bind "0.0.0.0:$PORT" --worker-class gthread --threads 16 --workers 2 \
  --timeout 120 --graceful-timeout 10 --keep-alive 75 --access-logfile - &
web=$!

stop() {
  trap - INT TERM
  echo "==> stopping (the worker removes its sandboxes)"
  kill -TERM "$web" "$worker" 2>/dev/null || true
  wait "$web" "$worker" 2>/dev/null || true
  exit 0
}
trap stop INT TERM

cat <<MSG

sandboxctl is starting:
  API          http://localhost:$PORT/api/v1/executions
  API docs     http://localhost:$PORT/api/docs/
  Admin        http://localhost:$PORT/admin/  (user admin; set SANDBOXCTL_ADMIN_PASSWORD to choose its password)
  Readiness    http://localhost:$PORT/readyz
A token:       .venv/bin/python manage.py create_token admin
               (or start with SANDBOXCTL_BOOTSTRAP_TOKEN=<value> to fix one)
Try:           curl -s localhost:$PORT/api/v1/executions -H "Authorization: Bearer \$TOKEN" \\
                 -H 'Content-Type: application/json' \\
                 -d '{"language":"python","code":"def main(name):\\n    return name","arguments":{"name":"x"}}'
Ctrl-C stops both.

MSG
wait -n "$web" "$worker" || true
stop
