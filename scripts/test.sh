#!/usr/bin/env bash
# `make test`: the set-up of `make run` plus Postgres and Redis, then the whole suite against the real things.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

start_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return 0; fi
  command -v pg_ctlcluster >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && return 0; sleep 0.5; done
  echo "PostgreSQL did not start" >&2; exit 1
}

start_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  command -v redis-server >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "Redis did not start" >&2; exit 1
}

ensure_database() {
  local name=$1
  psql -h 127.0.0.1 -U postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1 \
    || createdb -h 127.0.0.1 -U postgres "$name"
}

install_chromium() {
  # Browser tests drive Debian's Chromium (Playwright's own browser download is not available here).
  if command -v chromium >/dev/null; then return 0; fi
  say "installing chromium for the browser tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

install_axe() {
  # The browser tests inject axe-core (package.json, pinned by package-lock.json) into console pages.
  local want
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ -f node_modules/.installed ] && [ "$(cat node_modules/.installed)" = "$want" ]; then return 0; fi
  command -v npm >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
  say "installing axe-core for the browser tests"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.installed
}

start_postgres
start_redis
install_chromium
install_axe
ensure_database sandboxctl
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/sandboxctl}"
export CELERY_BROKER_URL="${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}"
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports
exec .venv/bin/pytest "$@"
