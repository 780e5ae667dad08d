#!/usr/bin/env bash
# Idempotent: creates apps/ai-worker/.venv and installs requirements-dev.txt when the
# requirements files changed since the last install (hash stamp kept inside the venv).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$HERE/.venv"
STAMP="$VENV/.requirements.sha256"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "ai-worker: creating venv in $VENV"
  "$PY" -m venv "$VENV"
fi

want="$(cat "$HERE/requirements.txt" "$HERE/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "ai-worker: installing requirements-dev.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements-dev.txt"
  echo "$want" > "$STAMP"
fi
