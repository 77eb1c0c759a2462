#!/usr/bin/env bash
# walship's one-command demo on the embedded default: installs what it needs, builds
# walship, starts a throwaway PostgreSQL 15 cluster in a temp dir (Unix socket only),
# and runs walship against it. Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

scripts/install-prereqs.sh
echo "== building walship (release)"
cargo build --release --locked --quiet
walship="$top/target/release/walship"

pgbin=${WALSHIP_PG_BIN:-/usr/lib/postgresql/15/bin}
work=$(mktemp -d /tmp/walship-demo.XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  # PostgreSQL refuses to run as root.
  id walship-demo >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin walship-demo
  chown walship-demo "$work"
  as_pg=(runuser -u walship-demo --)
fi
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL cluster in $work"
"${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work'
wal_level = replica
max_wal_senders = 5
CONF
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
export WALSHIP_PG="host=$work user=postgres"
export WALSHIP_REPO="$work/repo"

echo "== walship check: replication login, IDENTIFY_SYSTEM, and 3 s of streamed WAL"
"$pgbin/psql" -h "$work" -U postgres -qc "CREATE TABLE demo AS SELECT g FROM generate_series(1, 100000) g" &
"$walship" check --stream-seconds 3
wait
echo "== demo done"
