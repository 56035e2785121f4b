#!/usr/bin/env bash
# make test: the whole suite; says what it left out when PostgreSQL/Redis/chromium are absent.
set -uo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -n "${TEST_DATABASE_URL:-}" ] || missing+=("PostgreSQL tests (set TEST_DATABASE_URL)")
[ -n "${TEST_REDIS_URL:-}" ] || missing+=("Redis tests (set TEST_REDIS_URL)")
[ -x /usr/bin/chromium ] || missing+=("browser tests (install Debian's chromium)")
.venv/bin/python -m pytest "$@"
rc=$?
if [ ${#missing[@]} -gt 0 ]; then
  echo "make test left out: ${missing[*]}"
fi
exit $rc
