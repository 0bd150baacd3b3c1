#!/usr/bin/env bash
# What the test suite needs besides Python packages, on a fresh Debian machine (as root):
# Debian's Chromium for the web UI's browser tests, git for `tapewire run`'s, and a running
# PostgreSQL with the role and database the store suite's PostgreSQL half uses
# (TAPEWIRE_TEST_POSTGRES, default postgresql://tapewire:tapewire@127.0.0.1:5432/tapewire_test).
# Safe to run again: it installs, starts and creates only what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
[ -x /usr/bin/chromium ] || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
    pg_createcluster "$version" main
fi
pg_ctlcluster "$version" main status >/dev/null 2>&1 || pg_ctlcluster "$version" main start

as_postgres() { runuser -u postgres -- "$@"; }
as_postgres psql -v ON_ERROR_STOP=1 -q -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tapewire') THEN
    CREATE ROLE tapewire LOGIN PASSWORD 'tapewire';
  END IF; END \$\$;"
as_postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'tapewire_test'" | grep -q 1 ||
    as_postgres createdb -O tapewire tapewire_test
echo "services ready: chromium, git, PostgreSQL $version (tapewire_test)"
