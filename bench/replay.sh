#!/usr/bin/env bash
# Replay speed: WAL replayed from the repository through `walship archive-get`
# (restore_command, with its read-ahead at several depths) against the same
# WAL already in pg_wal. Written for `walship restore` (issue 5): the prefetch
# default is chosen from these numbers.
#
#   bench/replay.sh            # ~300 MiB of pgbench WAL, depths "0 4 8 16"
#   REPLAY_MIB=500 REPLAY_DEPTHS="8 32" bench/replay.sh
#   REPLAY_S3=1 bench/replay.sh   # the repository on a local S3 server (s3s-fs)
#
# Needs PostgreSQL 15 (or WALSHIP_PG_BIN) and the release-lto build of walship.
# Each mode: `walship restore` of the same backup to the latest point, then
# the time from `pg_ctl start` until the server leaves recovery.
set -euo pipefail
cd "$(dirname "$0")/.."
pgbin=${WALSHIP_PG_BIN:-/usr/lib/postgresql/15/bin}
psqlbin=/usr/lib/postgresql/15/bin/psql
mib=${REPLAY_MIB:-300}
depths=${REPLAY_DEPTHS:-0 4 8 16}
cargo build --profile release-lto --quiet
work=$(mktemp -d /tmp/walship-replay.XXXXXX)
chmod 755 "$work"
install -m 755 target/release-lto/walship "$work/walship"
w="$work/walship"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  id walship-demo >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin walship-demo
  chown walship-demo "$work"
  as_pg=(runuser -u walship-demo --)
fi
run() { "${as_pg[@]}" "$@"; }
cleanup() {
  for d in "$work"/data "$work"/r-*; do run "$pgbin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; done
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
run mkdir "$work/sock"
run sh -c "umask 077; openssl rand -hex 32 > '$work/key'"
repo=(--repo "$work/repo" --key-file "$work/key")
if [ "${REPLAY_S3:-0}" = 1 ]; then
  s3port=$((20000 + RANDOM % 20000))
  mkdir -p "$work/s3/bench"
  export AWS_ACCESS_KEY_ID=AKBENCH$RANDOM AWS_SECRET_ACCESS_KEY=bench-secret-$RANDOM$RANDOM
  "${S3S_FS:-$HOME/.cargo/bin/s3s-fs}" --host 127.0.0.1 --port $s3port --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$work/s3" >"$work/s3.log" 2>&1 &
  s3pid=$!
  trap 'kill $s3pid 2>/dev/null || true; cleanup' EXIT
  export WALSHIP_S3_ENDPOINT=http://127.0.0.1:$s3port WALSHIP_S3_REGION=us-east-1 WALSHIP_S3_PATH_STYLE=true
  sleep 1
  repo=(--repo s3://bench/replay --key-file "$work/key")
fi
run "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work/sock'
archive_mode = on
archive_command = 'WALSHIP_S3_ENDPOINT=${WALSHIP_S3_ENDPOINT:-} WALSHIP_S3_REGION=${WALSHIP_S3_REGION:-} WALSHIP_S3_PATH_STYLE=${WALSHIP_S3_PATH_STYLE:-} $w ${repo[*]} archive-push %p'
max_wal_size = '4GB'
checkpoint_timeout = '1h'
synchronous_commit = off
CONF
run "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
sql() { run "$psqlbin" -X -q -A -t -h "$work/sock" -U postgres -d postgres -c "$1"; }
run /usr/lib/postgresql/15/bin/pgbench -h "$work/sock" -U postgres -i -q -s 10 postgres >/dev/null
sql "CHECKPOINT" >/dev/null
run "$w" "${repo[@]}" --pg "host=$work/sock user=postgres" backup >/dev/null
start=$(sql "SELECT pg_current_wal_lsn()")
while [ "$(sql "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start') < $mib::bigint * 1048576")" = t ]; do
  run /usr/lib/postgresql/15/bin/pgbench -h "$work/sock" -U postgres -n -c 2 -T 10 postgres >/dev/null
done
last=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")
sql "SELECT pg_switch_wal()" >/dev/null
until [ "$(sql "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ]; do sleep 0.2; done
wal_mib=$(sql "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start') / 1048576")
echo "WAL generated after the backup: ${wal_mib%.*} MiB"

port=5500
replay() { # name, extra setup
  local name=$1 d="$work/r-$1"
  port=$((port + 1))
  local r0 r1
  r0=$(date +%s.%N)
  run "$w" "${repo[@]}" restore --pgdata "$d" --archive-mode off >/dev/null
  r1=$(date +%s.%N)
  printf '%-22s restore of the data directory (%s MiB): %.1f s\n' "$name" "$(du -sm "$d" | cut -f1)" "$(echo "$r1 - $r0" | bc)"
  cat >>"$d/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '$work/sock'
CONF
  if [ "$name" = local ]; then
    # Every segment in pg_wal beforehand; restore_command finds nothing.
    local n seg cur
    cur=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")
    n=$(( 0x$(echo "$cur" | cut -c9-16) * 256 + 0x$(echo "$cur" | cut -c17-24) ))
    for seg in $(seq 1 "$n"); do
      f=$(printf '00000001000000%02X%08X' $((seg / 256)) $((seg % 256)))
      run env WALSHIP_PREFETCH=0 "$w" "${repo[@]}" archive-get "$f" "$d/pg_wal/$f" 2>/dev/null || true
    done
    echo "restore_command = 'false'" >>"$d/postgresql.auto.conf"
  fi
  local t0 t1
  t0=$(date +%s.%N)
  run env WALSHIP_PREFETCH="${2:-8}" WALSHIP_SPOOL="$work/spool-$name" "$pgbin/pg_ctl" -D "$d" -l "$work/$name.log" -W start >/dev/null
  until [ "$(run "$psqlbin" -X -A -t -h "$work/sock" -p $port -U postgres -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  run "$pgbin/pg_ctl" -D "$d" -m immediate stop >/dev/null
  printf '%-22s %6.1f s  %6.1f MiB/s\n' "$name" "$(echo "$t1 - $t0" | bc)" "$(echo "$wal_mib / ($t1 - $t0)" | bc -l)"
  rm -rf "$d" "$work/spool-$name"
}
echo "mode                   replay     WAL rate"
replay local
for depth in $depths; do replay "archive-get-depth-$depth" "$depth"; done
