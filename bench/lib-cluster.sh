# shellcheck shell=bash
# Shared by bench/backup.sh and bench/restore.sh (sourced, not run): prerequisites, a
# throwaway PostgreSQL cluster whose archive_command archives with every tool, the tools'
# settings, and the timing helper (same method as bench/archive.sh).
#
# Environment: BENCH_TOOLS, BENCH_SCALE (pgbench scale, default 50), BENCH_KEEP, BENCH_NICE,
# WALSHIP_BIN, WALRUS_BIN, PGBIN, BENCH_USER.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
RESULTS=$BENCH_DIR/results
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_USER=${BENCH_USER:-walship-bench}
SCALE=${BENCH_SCALE:-50}
WALSHIP_BIN=${WALSHIP_BIN:-$ROOT/target/release-lto/walship}
WALRUS_BIN=${WALRUS_BIN:-$(command -v walrus || echo "$HOME/.cargo/bin/walrus")}
TIME=/usr/bin/time
PORT=5432 # private socket directory and no TCP listener: cannot clash with another cluster

die() {
  echo "bench/$SCRIPT: $*" >&2
  exit 1
}
log() { echo "bench: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root (PostgreSQL runs as the unprivileged user $BENCH_USER)"
[ -x "$TIME" ] || die "$TIME missing: apt-get install time"
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE must be a positive integer, got '$SCALE'"
for b in initdb pg_ctl postgres psql pgbench pg_basebackup; do
  [ -x "$PGBIN/$b" ] || die "$PGBIN/$b missing: apt-get install postgresql-15 (or set PGBIN)"
done
command -v openssl >/dev/null 2>&1 || die "openssl missing: apt-get install openssl"
command -v setpriv >/dev/null 2>&1 || die "setpriv missing: apt-get install util-linux"
[ -x "$WALSHIP_BIN" ] || die "$WALSHIP_BIN missing: cargo build --profile release-lto (bench/run.sh does it)"
command -v pgbackrest >/dev/null 2>&1 || die "pgbackrest missing: apt-get install pgbackrest"
if ! id "$BENCH_USER" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_USER"
fi

CLUSTER=$(mktemp -d /tmp/walship-bench.XXXXXX)
PGDATA=$CLUSTER/pgdata
SOCK=$CLUSTER/sock
WORK=$CLUSTER/work
LOGS=$WORK/logs
mkdir -p "$SOCK" "$LOGS" "$RESULTS"
chmod 0700 "$CLUSTER"

cleanup() {
  local d
  for d in "$PGDATA" "$WORK"/r-*; do
    if [ -f "$d/postmaster.pid" ]; then
      as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    fi
  done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    log "kept the cluster directory $CLUSTER"
  else
    rm -rf "$CLUSTER"
  fi
}
trap cleanup EXIT

# Every tool runs as the PostgreSQL user: archive_command writes into the same repositories.
# setpriv execs directly (no PAM session as runuser opens), so it adds next to nothing.
AS_PG=(setpriv --reuid="$BENCH_USER" --regid="$BENCH_USER" --init-groups --)
as_pg() { "${AS_PG[@]}" "$@"; }
psql_q() { as_pg "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
pgbench_q() { as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres "$@" postgres; }

# --- tool settings --------------------------------------------------------------------------
REPO_WALSHIP=$WORK/repos/walship
REPO_PGBR=$WORK/repos/pgbackrest
REPO_WALRUS=$WORK/repos/walrus
PGARCHIVE=$WORK/repos/plain # plain copies: the source of the local pg_wal floor
mkdir -p "$REPO_WALSHIP" "$REPO_PGBR" "$REPO_WALRUS" "$PGARCHIVE" "$WORK/pgbackrest/log" \
  "$WORK/pgbackrest/lock" "$WORK/pgbackrest/spool"

# walship: lz4 (default) + AES-256-GCM with a key file; no read-ahead unless a run says so.
export WALSHIP_REPO=$REPO_WALSHIP
export WALSHIP_KEY_FILE=$WORK/walship.key
export WALSHIP_STANZA=bench
export WALSHIP_PG="host=$SOCK port=$PORT user=postgres dbname=postgres"
export WALSHIP_PREFETCH=0
openssl rand -hex 32 >"$WALSHIP_KEY_FILE"
chmod 0600 "$WALSHIP_KEY_FILE"

# pgBackRest: lz4, aes-256-cbc, 2 processes, fast checkpoints.
PGBR_CONF=$WORK/pgbackrest/pgbackrest.conf
cat >"$PGBR_CONF" <<EOF
[global]
repo1-path=$REPO_PGBR
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(openssl rand -base64 48 | tr -d '\n')
repo1-retention-full=9999
compress-type=lz4
process-max=2
start-fast=y
archive-async=n
log-path=$WORK/pgbackrest/log
lock-path=$WORK/pgbackrest/lock
spool-path=$WORK/pgbackrest/spool
log-level-console=warn
log-level-file=off

[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-port=$PORT
pg1-user=postgres
EOF
chmod 0600 "$PGBR_CONF"

# wal-rus: WAL-G's settings, lz4, no encryption (as in the archive benchmark).
export WALG_FILE_PREFIX=$REPO_WALRUS
export WALG_COMPRESSION_METHOD=lz4
export WALG_DOWNLOAD_CONCURRENCY=1
export PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
# Private copies of the binaries: readable by the PostgreSQL user (wal-rus lives in root's
# ~/.cargo), and not replaced by a rebuild while the benchmark runs.
mkdir -p "$CLUSTER/bin"
install -m 0755 "$WALSHIP_BIN" "$CLUSTER/bin/walship"
WALSHIP_BIN=$CLUSTER/bin/walship
HAVE_WALRUS=0
if [ -x "$WALRUS_BIN" ]; then
  install -m 0755 "$WALRUS_BIN" "$CLUSTER/bin/walrus"
  WALRUS_BIN=$CLUSTER/bin/walrus
  HAVE_WALRUS=1
fi

chown -R "$BENCH_USER:" "$CLUSTER"

# --- the cluster ----------------------------------------------------------------------------
# start_cluster: initdb, archive_command archiving with every tool, pgbench -i -s $SCALE.
# The tools archive each segment side by side, not one after another: a backup that waits for
# its own tool's copy of the last segment (walship, pgBackRest) then does not also wait for the
# tools before it in a chain.
start_cluster() {
  local ac=$CLUSTER/bin/archive-all
  {
    echo '#!/bin/sh'
    echo '# archive_command of the benchmark cluster: archive-all %p %f'
    echo "pgbackrest --config=$PGBR_CONF --stanza=bench archive-push \"\$1\" & pgbr=\$!"
    echo "WALSHIP_REPO=$REPO_WALSHIP WALSHIP_KEY_FILE=$WALSHIP_KEY_FILE WALSHIP_STANZA=bench $WALSHIP_BIN archive-push \"\$1\" & ws=\$!"
    if [ "$HAVE_WALRUS" = 1 ]; then
      echo "WALG_FILE_PREFIX=$REPO_WALRUS WALG_COMPRESSION_METHOD=lz4 $WALRUS_BIN wal-push \"\$1\" & wr=\$!"
    else
      echo 'wr='
    fi
    echo "cp \"\$1\" \"$PGARCHIVE/\$2\" & cpy=\$!"
    echo 'rc=0'
    echo 'for p in $pgbr $ws $wr $cpy; do wait "$p" || rc=1; done'
    echo 'exit $rc'
  } >"$ac"
  chmod 0755 "$ac"
  # The comment names the tools: pgBackRest refuses an archive_command without "pgbackrest".
  ac="$ac %p %f # pgbackrest, walship, wal-rus and cp side by side"
  log "initdb in $PGDATA"
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C >"$LOGS/initdb.log" 2>&1 ||
    die "initdb failed, see $LOGS/initdb.log"
  cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PORT
wal_level = replica
archive_mode = on
archive_command = '$ac'
max_wal_size = 4GB
checkpoint_timeout = 30min
shared_buffers = 128MB
max_wal_senders = 10
EOF
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w start >/dev/null ||
    die "PostgreSQL did not start, see $LOGS/postgres.log"
  as_pg pgbackrest --config="$PGBR_CONF" --stanza=bench stanza-create >"$LOGS/pgbackrest-stanza.log" 2>&1 ||
    die "pgbackrest stanza-create failed, see $LOGS/pgbackrest-stanza.log"
  as_pg env WALSHIP_REPO="$REPO_WALSHIP" "$WALSHIP_BIN" init >"$LOGS/walship-init.log" 2>&1 ||
    log "walship init failed (archive-push creates the stanza itself), see $LOGS/walship-init.log"
  log "pgbench -i -s $SCALE"
  pgbench_q -i -s "$SCALE" -q >"$LOGS/pgbench-init.log" 2>&1 || die "pgbench -i failed, see $LOGS/pgbench-init.log"
  psql_q "CHECKPOINT"
}

# wait_archived: switch the segment and wait until every tool archived it.
wait_archived() {
  local last
  last=$(psql_q "SELECT pg_walfile_name(pg_current_wal_lsn())")
  psql_q "SELECT pg_switch_wal()" >/dev/null
  for _ in $(seq 1 1200); do
    [ "$(psql_q "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ] && return 0
    sleep 0.5
  done
  die "PostgreSQL did not archive $last within 600 s, see $LOGS/postgres.log"
}

# --- timing (as bench/archive.sh) -----------------------------------------------------------
children_ms() {
  local user sys u
  times >"$WORK/times.out"
  { read -r _ && read -r user sys; } <"$WORK/times.out"
  to_ms "$user"
  u=$TO_MS
  to_ms "$sys"
  CHILD_USER_MS=$u
  CHILD_MS=$((u + TO_MS))
}
to_ms() {
  local v=$1 min sec
  min=${v%%m*}
  sec=${v#*m}
  sec=${sec%s}
  TO_MS=$(((10#$min * 60 + 10#${sec%.*}) * 1000 + 10#${sec#*.}))
}

# measure RAW TOOL OP ITER LOGFILE: run CMD (as the PostgreSQL user) under /usr/bin/time and
# append one row to RAW; stdout goes to $WORK/out.txt. MEASURE_RC holds the exit status.
measure() {
  local raw=$1 tool=$2 op=$3 iter=$4 tlog=$5 t0 t1 cpu0 user0 e u s m
  MEASURE_RC=0
  children_ms
  cpu0=$CHILD_MS
  user0=$CHILD_USER_MS
  t0=${EPOCHREALTIME/./}
  "$TIME" -f '%e %U %S %M' -o "$WORK/time.out" "${AS_PG[@]}" "${CMD[@]}" >"$WORK/out.txt" 2>>"$tlog" || MEASURE_RC=$?
  t1=${EPOCHREALTIME/./}
  children_ms
  if [ "$MEASURE_RC" -ne 0 ]; then
    tail -n 20 "$tlog" >&2
    return 0
  fi
  read -r e u s m < <(tail -n 1 "$WORK/time.out")
  printf '%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n' "$tool" "$op" "$iter" \
    $((t1 - t0)) $((CHILD_USER_MS - user0)) $((CHILD_MS - cpu0 - (CHILD_USER_MS - user0))) \
    "$e" "$u" "$s" "$m" >>"$raw"
}
raw_header() {
  printf 'tool\top\titer\twall_us\tcpu_user_ms\tcpu_sys_ms\ttime_e_s\ttime_U_s\ttime_S_s\tmaxrss_kib\n' >"$1"
}

NICE=${BENCH_NICE:--10}
renice -n "$NICE" -p $$ >/dev/null || log "renice $NICE failed; measuring at normal priority"

# env_file FILE: what ran where.
env_file() {
  {
    echo "run: $RUN_ID (UTC)"
    echo "cpu: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "load average (1/5/15 min) before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "measured at nice $NICE; pgbench scale $SCALE"
    echo "postgresql: $("$PGBIN/postgres" --version)"
    echo "walship: $("$WALSHIP_BIN" --version 2>&1 | head -n 1) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown) + working tree)"
    echo "pgbackrest: $(pgbackrest version)"
    if [ "$HAVE_WALRUS" = 1 ]; then echo "wal-rus: $("$WALRUS_BIN" --version 2>&1 | head -n 1)"; fi
  } >"$1"
}

# summarize RAW: medians (p90) of wall, CPU, RSS per tool x op, and each tool's ratio to walship.
summarize() {
  awk -F'\t' '
  function sortv(m, k, cnt,   i, j, v) {
    for (i = 1; i <= cnt; i++) S[i] = V[m, k, i]
    for (i = 2; i <= cnt; i++) { v = S[i]; for (j = i - 1; j >= 1 && S[j] > v; j--) S[j + 1] = S[j]; S[j + 1] = v }
  }
  function median(cnt) { return cnt % 2 ? S[(cnt + 1) / 2] : (S[cnt / 2] + S[cnt / 2 + 1]) / 2 }
  function p90(cnt,   r) { r = int(0.9 * cnt); if (r < 0.9 * cnt) r++; return S[r < 1 ? 1 : r] }
  FNR == 1 { next }
  {
    k = $2 SUBSEP $1
    if (!(k in n)) order[++nk] = k
    c = ++n[k]
    V["wall", k, c] = $4 / 1e6; V["cpu", k, c] = ($5 + $6) / 1000; V["rss", k, c] = $10 / 1024
  }
  END {
    print "| op | tool | runs | wall s | CPU s (user+sys) | peak RSS MiB | walship wall / this |"
    print "|---|---|---:|---:|---:|---:|---:|"
    for (i = 1; i <= nk; i++) {
      k = order[i]; split(k, p, SUBSEP); cnt = n[k]
      sortv("wall", k, cnt); W[k] = median(cnt); wp = p90(cnt)
      sortv("cpu", k, cnt); cm = median(cnt); cp = p90(cnt)
      sortv("rss", k, cnt); rm = median(cnt); rp = p90(cnt)
      ws = p[1] SUBSEP "walship"
      printf "| %s | %s | %d | %.2f (%.2f) | %.2f (%.2f) | %.1f (%.1f) | %s |\n", p[1], p[2], cnt,
        W[k], wp, cm, cp, rm, rp, (ws in W && W[k] > 0) ? sprintf("%.2f", W[ws] / W[k]) : "n/a"
    }
  }' "$1"
}
