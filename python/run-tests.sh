#!/usr/bin/env bash
# Tests of the energyd Python package against a real `energyd --user`.
# Builds energyd (debug) if needed, installs the package and its test
# dependencies (pytest, numpy; not torch: its wheel is gigabytes, and the
# torch-specific parsing is covered by the committed real trace) into a
# venv, and runs pytest.
#
# Usage: python/run-tests.sh [pytest args]
# Environment: PYTEST_VENV=DIR (default target/python-test-venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${PYTEST_VENV:-$ROOT/target/python-test-venv}"

# ENERGYD_BIN: an energyd already built (CI passes the one the Rust tests
# built; `cargo build -p energyd` alone would unify features over energyd
# only and recompile a dozen dependencies).
if [ -z "${ENERGYD_BIN:-}" ]; then
    cargo build -q -p energyd --bins
    ENERGYD_BIN="$ROOT/target/debug/energyd"
fi
if ! "$VENV/bin/python" -c 'import pytest, numpy' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check pytest numpy
fi
# The package itself, as a user installs it: one pip command.
"$VENV/bin/pip" install -q --disable-pip-version-check "$ROOT/python"
cd "$ROOT/python"
ENERGYD_BIN="$ENERGYD_BIN" exec "$VENV/bin/python" -m pytest -q tests "$@"
