#!/usr/bin/env bash
# walship's whole test suite, as CI runs it (.ci/run calls exactly this).
# On a bare Debian machine it first installs what it needs: PostgreSQL 15 from
# apt, PostgreSQL 13 and 18 from the npm registry, and the s3s-fs S3 server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-prereqs.sh
scripts/fetch-pg.sh 13 18
scripts/ensure-s3s.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

echo "== unit and integration tests on PostgreSQL 15"
cargo test --locked

# The protocol, base-backup and point-in-time-recovery tests again on the
# oldest and the newest supported majors.
for major in 13 18; do
  echo "== protocol, base backup and PITR tests on PostgreSQL $major"
  export WALSHIP_PG_BIN="$PWD/.pg/$major/bin"
  cargo test --locked --test protocol --test basebackup_protocol
  cargo test --locked --test restore pitr_
  unset WALSHIP_PG_BIN
done
