#!/usr/bin/env bash
# Runs setup, then the pytest suite of the AI worker; the exit code is pytest's.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$HERE/scripts/setup.sh"
cd "$HERE"
exec .venv/bin/python -m pytest -q "$@"
