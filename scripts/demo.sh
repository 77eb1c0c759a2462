#!/usr/bin/env bash
# walship's one-command demo: point-in-time recovery on a throwaway cluster.
#
# On a bare machine it installs what it needs, builds walship, starts a
# throwaway PostgreSQL cluster (Unix socket only) whose archive_command is
# `walship archive-push` into an encrypted local-directory repository, takes a
# base backup, writes data, notes the time, destroys a table, restores the
# cluster to the noted time with `walship restore`, starts the restored copy,
# and prints the table's row count before the damage, after it, and after the
# recovery. Everything lives in a temp dir that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

scripts/install-prereqs.sh
echo "== building walship (release)"
cargo build --release --locked --quiet

pgbin=${WALSHIP_PG_BIN:-/usr/lib/postgresql/15/bin}
psqlbin=$pgbin/psql
[ -x "$psqlbin" ] || psqlbin=/usr/lib/postgresql/15/bin/psql
work=$(mktemp -d /tmp/walship-demo.XXXXXX)
chmod 755 "$work"
# The binary sits beside the cluster so that the PostgreSQL user can run it
# (archive_command and restore_command run as that user).
install -m 755 "$top/target/release/walship" "$work/walship"
walship="$work/walship"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  # PostgreSQL refuses to run as root.
  id walship-demo >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin walship-demo
  chown walship-demo "$work"
  as_pg=(runuser -u walship-demo --)
fi
run() { "${as_pg[@]}" "$@"; }
cleanup() {
  run "$pgbin/pg_ctl" -D "$work/restored" -m immediate stop >/dev/null 2>&1 || true
  run "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/sock" "$work/rsock"
[ ${#as_pg[@]} -eq 0 ] || chown walship-demo "$work/sock" "$work/rsock"
# An encrypted repository: the key is a file only the PostgreSQL user reads.
run sh -c "umask 077; openssl rand -hex 32 > '$work/key'"
repo_flags="--repo $work/repo --key-file $work/key"

echo "== a throwaway PostgreSQL cluster archiving its WAL with walship (repository: $work/repo)"
run "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust --wal-segsize=1 >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work/sock'
wal_level = replica
max_wal_senders = 5
archive_mode = on
archive_command = '$walship $repo_flags archive-push %p'
CONF
run "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
sql() { run "$psqlbin" -X -q -A -t -h "$work/sock" -U postgres -d postgres -v ON_ERROR_STOP=1 -c "$1"; }
rsql() { run "$psqlbin" -X -q -A -t -h "$work/rsock" -U postgres -d postgres -c "$1"; }
wait_archived() {
  local last
  last=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")
  sql "SELECT pg_switch_wal()" >/dev/null
  for _ in $(seq 1 300); do
    [ "$(sql "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ] && return
    sleep 0.1
  done
  echo "archiving did not reach $last; see $work/log" >&2
  exit 1
}

sql "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS item FROM generate_series(1, 10000) g"
wait_archived
echo "== walship backup"
run "$walship" $repo_flags --pg "host=$work/sock user=postgres" backup --label demo

sql "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(10001, 15000) g"
before=$(sql "SELECT count(*) FROM orders")
sleep 1
noted=$(sql "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
sleep 1
echo "== noted the time $noted; now a mistake: DROP TABLE orders"
sql "DROP TABLE orders"
after=$(sql "SELECT count(*) FROM orders" 2>/dev/null || echo "0 (table orders does not exist)")
wait_archived

echo "== walship info"
run "$walship" $repo_flags info
echo "== walship restore --dry-run --target-time '$noted'"
run "$walship" $repo_flags restore --pgdata "$work/restored" --target-time "$noted" --dry-run
echo "== walship restore --target-time '$noted' --target-action promote --archive-mode off"
run "$walship" $repo_flags restore --pgdata "$work/restored" --target-time "$noted" \
  --target-action promote --archive-mode off
cat >>"$work/restored/postgresql.conf" <<CONF
unix_socket_directories = '$work/rsock'
CONF
echo "== starting the restored cluster (it replays the archived WAL through walship archive-get)"
run "$pgbin/pg_ctl" -D "$work/restored" -l "$work/restored.log" -w start >/dev/null
for _ in $(seq 1 600); do
  [ "$(rsql "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break
  sleep 0.1
done
recovered=$(rsql "SELECT count(*) FROM orders")

echo
echo "rows in orders before the damage:  $before"
echo "rows in orders after the damage:   $after"
echo "rows in orders after the recovery: $recovered"
if [ "$recovered" != "$before" ]; then
  echo "== demo FAILED: the restored table does not match; server log:" >&2
  tail -n 30 "$work/restored.log" >&2
  exit 1
fi
echo "== demo done"
