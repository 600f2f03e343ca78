#!/usr/bin/env bash
# The project's virtualenv in .venv with the dev extras, reinstalled only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "==> installing Python dependencies into .venv"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[dev]'
echo "$want" > "$stamp"
