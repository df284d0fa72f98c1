#!/usr/bin/env bash
# Run the whole test suite (sets up ./.venv first if needed): bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-demo
.venv/bin/ruff check src tests benchmarks examples
exec .venv/bin/python -m pytest "$@"
