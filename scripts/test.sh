#!/usr/bin/env bash
# Install (with test extras), lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
.venv/bin/ruff check saerad tests bench
exec .venv/bin/python -m pytest -q "$@"
