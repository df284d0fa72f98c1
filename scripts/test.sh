#!/usr/bin/env bash
# Run the whole test suite (sets up ./.venv first if needed): bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-demo
# The FiftyOne end-to-end test drives the Debian Chromium (Playwright's own browser download
# does not work offline).
if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
    else
        echo "test: please install Chromium (the FiftyOne App test needs it)" >&2; exit 2
    fi
fi
.venv/bin/ruff check src tests benchmarks examples
# the docs site (docs/, mkdocs.yml) builds with no warning; into a throwaway folder, offline
site_dir=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site_dir"
rm -rf "$site_dir"
exec .venv/bin/python -m pytest "$@"
