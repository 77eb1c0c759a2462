#!/usr/bin/env bash
# Installs what walship's build, tests and demo need on a bare Debian machine:
# PostgreSQL 15 (server, client, pgbench), Node.js/npm (to fetch other majors),
# and a Rust toolchain check. Idempotent: does nothing when all is present.
set -euo pipefail

need_apt=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/psql ] || need_apt+=(postgresql-client-15)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-prereqs: missing packages: ${need_apt[*]}; run as root or: sudo apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "install-prereqs: apt-get install ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The Debian package creates and starts a default cluster; walship never uses it.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-prereqs: cargo not found: install a Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi
