#!/usr/bin/env bash
# Idempotent set-up shared by `make run` and `make test`: system packages, dockerd with runsc, the
# virtualenv, sandbox images, migrations and the admin user. Safe to run again at any time. With --worker, only
# what a sandbox worker host needs (`make worker`): runsc, the virtualenv and the root file systems.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'sandboxctl setup: %s\n' "$*" >&2; exit 1; }

need_root_for() {
  if [ "$(id -u)" != 0 ]; then
    die "not root, so cannot $1. As root run: $2"
  fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "no apt-get here; install these packages yourself: ${missing[*]}"
  need_root_for "install ${missing[*]}" "apt-get install -y ${missing[*]}"
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_runsc() {
  # bookworm's runsc (0.0~20221219) ignores PR_SET_DUMPABLE for /proc/<pid>/fd; bookworm-backports carries
  # 0.0~20240729, which the whole suite (the adversarial tests included) is run against.
  local want=0.0~20240729
  if dpkg-query -W -f='${Version}' runsc 2>/dev/null | grep -q "^${want}"; then return 0; fi
  need_root_for "install runsc ${want}" "see scripts/setup.sh install_runsc"
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    say "adding Debian's bookworm-backports suite to apt's sources (for runsc ${want})"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > /etc/apt/sources.list.d/bookworm-backports.sources
  fi
  say "installing runsc ${want} from bookworm-backports"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports runsc >/dev/null
  dpkg-query -W -f='${Version}' runsc | grep -q "^${want}" || die "runsc ${want} did not install"
}

register_runsc() {
  # runsc refuses to start here without --network=none; dockerd re-reads runtimes on SIGHUP.
  python3 - <<'PY'
import json, os
path = "/etc/docker/daemon.json"
config = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
wanted = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}
if config.get("runtimes", {}).get("runsc") != wanted:
    config.setdefault("runtimes", {})["runsc"] = wanted
    os.makedirs("/etc/docker", exist_ok=True)
    json.dump(config, open(path, "w"), indent=2)
    print("==> registered runsc in", path)
PY
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then
    if ! docker info --format '{{json .Runtimes}}' | grep -q runsc; then
      say "reloading dockerd to pick up the runsc runtime"
      kill -HUP "$(pidof dockerd)"
      sleep 2
    fi
    return 0
  fi
  need_root_for "start dockerd" "dockerd &"
  mkdir -p /var/log
  # A host daemon, not part of the stack: through the service manager where there is one, else in a session
  # of its own, so Ctrl-C on `make run` (or a kill of its process group) never takes dockerd down with it.
  if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
    say "started dockerd (systemctl start docker)"
  else
    say "starting dockerd, detached"
    setsid -f dockerd </dev/null >/var/log/sandboxctl-dockerd.log 2>&1
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "dockerd did not start; see /var/log/sandboxctl-dockerd.log"
}

set_up_worker_host() {
  # What a sandbox worker host needs, and no more: runsc, the virtualenv, the root file systems, its folders.
  apt_install debootstrap
  install_runsc
  bash scripts/venv.sh
  mkdir -p "${SANDBOXCTL_DATA_DIR:-$PWD/data}"
  say "building sandbox root file systems if missing"
  .venv/bin/python manage.py build_images --no-docker
}

if [ "${1:-}" = "--worker" ]; then
  set_up_worker_host
  exit 0
fi
apt_install docker.io debootstrap redis-server
install_runsc
register_runsc
start_dockerd
bash scripts/venv.sh
# Everything below writes into the data folder (SQLite, the secret key, static files): a fresh clone has none.
mkdir -p "${SANDBOXCTL_DATA_DIR:-$PWD/data}/broker"
say "building sandbox images if missing"
.venv/bin/python manage.py build_images
.venv/bin/python manage.py migrate --noinput -v0
.venv/bin/python manage.py bootstrap
