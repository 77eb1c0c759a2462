#!/usr/bin/env bash
# Benchmark: archive-push and archive-get of single WAL segments.
#
# walship (lz4 + AES-256-GCM) vs pgBackRest archive-push/archive-get (lz4, aes-256-cbc,
# archive-async=n) vs wal-rus wal-push/wal-fetch (lz4), all on the same machine, in the same
# run, on the same two real 16 MiB segments from a throwaway PostgreSQL 15 cluster:
#   bulk  a segment written by a bulk load (CREATE TABLE AS of generated rows)
#   oltp  the first segment after a checkpoint under pgbench: full of full-page writes
#
# Every tool x segment x {push, get} runs BENCH_ITER times (after one untimed warm-up), each
# run wrapped in `/usr/bin/time -f '%e %U %S %M'`, with the tools interleaved in every
# iteration so that background load hits them alike. Before each push the tool's stored copy
# is deleted (untimed) so that every push does the real work; every get writes a fresh file,
# which is compared with the original (untimed).
#
# Normally started by bench/run.sh, which installs the tools and builds walship. Environment:
#   BENCH_ITER   runs per measurement (default 15)
#   BENCH_TOOLS  subset of "walship pgbackrest walrus" (default: all three)
#   BENCH_KEEP   1 = keep the throwaway cluster directory
#   BENCH_NICE   scheduling priority of the measured commands (default -10; 0 = unchanged)
#   WALSHIP_BIN, WALRUS_BIN, PGBIN, BENCH_USER (unprivileged user that runs PostgreSQL)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
WORK=$BENCH_DIR/work
RESULTS=$BENCH_DIR/results
ITER=${BENCH_ITER:-15}
TOOLS=${BENCH_TOOLS:-walship pgbackrest walrus}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_USER=${BENCH_USER:-walship-bench}
WALSHIP_BIN=${WALSHIP_BIN:-$ROOT/target/release-lto/walship}
WALRUS_BIN=${WALRUS_BIN:-$(command -v walrus || echo "$HOME/.cargo/bin/walrus")}
TIME=/usr/bin/time
SEG_SIZE=16777216
PORT=5432 # private socket directory and no TCP listener: cannot clash with another cluster

die() {
  echo "bench/archive.sh: $*" >&2
  exit 1
}
log() { echo "bench: $*" >&2; }

# --- prerequisites: fail loudly, saying how to get what is missing ---------------------------
[[ $ITER =~ ^[1-9][0-9]*$ ]] || die "BENCH_ITER must be a positive integer, got '$ITER'"
[ "$(id -u)" -eq 0 ] || die "run as root (PostgreSQL runs as the unprivileged user $BENCH_USER)"
[ -x "$TIME" ] || die "$TIME missing: apt-get install time"
for b in initdb pg_ctl postgres psql pgbench; do
  [ -x "$PGBIN/$b" ] || die "$PGBIN/$b missing: apt-get install postgresql-15 (or set PGBIN)"
done
command -v openssl >/dev/null 2>&1 || die "openssl missing: apt-get install openssl"
for t in $TOOLS; do
  case $t in
    walship) [ -x "$WALSHIP_BIN" ] || die "$WALSHIP_BIN missing: cargo build --profile release-lto (bench/run.sh does it)" ;;
    pgbackrest) command -v pgbackrest >/dev/null 2>&1 || die "pgbackrest missing: apt-get install pgbackrest" ;;
    walrus) [ -x "$WALRUS_BIN" ] || die "$WALRUS_BIN missing: cargo install wal-rus --version 0.4.1 (bench/run.sh does it)" ;;
    *) die "unknown tool '$t' in BENCH_TOOLS (known: walship pgbackrest walrus)" ;;
  esac
done
if ! id "$BENCH_USER" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_USER"
fi

# --- throwaway cluster ----------------------------------------------------------------------
CLUSTER=$(mktemp -d /tmp/walship-bench.XXXXXX)
PGDATA=$CLUSTER/pgdata
SOCK=$CLUSTER/sock
PGARCHIVE=$CLUSTER/archive
mkdir -p "$SOCK" "$PGARCHIVE"
chown -R "$BENCH_USER:" "$CLUSTER"
chmod 0700 "$CLUSTER"

cleanup() {
  if [ -f "$PGDATA/postmaster.pid" ]; then
    runuser -u "$BENCH_USER" -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    log "kept the cluster directory $CLUSTER"
  else
    rm -rf "$CLUSTER"
  fi
}
trap cleanup EXIT

as_pg() { runuser -u "$BENCH_USER" -- "$@"; }
psql_q() { "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
pgbench_q() { "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres "$@" postgres; }

log "initdb in $PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C >"$CLUSTER/initdb.log" 2>&1 ||
  die "initdb failed, see $CLUSTER/initdb.log"
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PORT
wal_level = replica
archive_mode = on
archive_command = 'cp %p $PGARCHIVE/%f'
max_wal_size = 4GB
checkpoint_timeout = 30min
shared_buffers = 128MB
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$CLUSTER/postgres.log" -w start >/dev/null ||
  die "PostgreSQL did not start, see $CLUSTER/postgres.log"

# --- the two segments -----------------------------------------------------------------------
# A segment name from an LSN plus an offset: pg_walfile_name names the segment holding it.
seg_at() { psql_q "SELECT pg_walfile_name('$1'::pg_lsn + $2)"; }

log "bulk load (CREATE TABLE AS of 2M generated rows)"
start_lsn=$(psql_q "SELECT pg_current_wal_lsn()")
psql_q "CREATE TABLE bulk_load AS
          SELECT g AS id, md5(g::text) AS digest, g % 1000 AS bucket,
                 now() - g * interval '1 second' AS created_at
          FROM generate_series(1, 2000000) AS g"
# Two segments past the start: certainly written entirely by the load.
BULK_SEG=$(seg_at "$start_lsn" $((2 * SEG_SIZE)))
[[ $(psql_q "SELECT pg_walfile_name(pg_current_wal_lsn())") > "$BULK_SEG" ]] ||
  die "the bulk load wrote less WAL than expected (target $BULK_SEG)"

log "OLTP: pgbench -i -s 10, CHECKPOINT, pgbench until a whole segment after the checkpoint is written"
pgbench_q -i -s 10 -q >"$CLUSTER/pgbench-init.log" 2>&1 || die "pgbench -i failed, see $CLUSTER/pgbench-init.log"
psql_q "CHECKPOINT"
redo_lsn=$(psql_q "SELECT redo_lsn FROM pg_control_checkpoint()")
# The segment after the one holding the redo point: every page touched first after the
# checkpoint is logged as a full-page image.
OLTP_SEG=$(seg_at "$redo_lsn" "$SEG_SIZE")
for _ in $(seq 1 30); do
  [[ $(psql_q "SELECT pg_walfile_name(pg_current_wal_lsn())") > "$OLTP_SEG" ]] && break
  pgbench_q -n -c 4 -j 2 -T 5 >>"$CLUSTER/pgbench-run.log" 2>&1 || die "pgbench failed, see $CLUSTER/pgbench-run.log"
done
[[ $(psql_q "SELECT pg_walfile_name(pg_current_wal_lsn())") > "$OLTP_SEG" ]] ||
  die "pgbench did not fill $OLTP_SEG in 150 s"
psql_q "SELECT pg_switch_wal()" >/dev/null

rm -rf "$WORK"
mkdir -p "$WORK/segments" "$RESULTS"
for seg in "$BULK_SEG" "$OLTP_SEG"; do
  for _ in $(seq 1 120); do
    [ -f "$PGARCHIVE/$seg" ] && break
    sleep 0.5
  done
  [ -f "$PGARCHIVE/$seg" ] || die "PostgreSQL did not archive $seg within 60 s, see $CLUSTER/postgres.log"
  cp "$PGARCHIVE/$seg" "$WORK/segments/$seg"
done
LABELS=(bulk oltp)
SEGS=("$BULK_SEG" "$OLTP_SEG")
log "segments: bulk=$BULK_SEG oltp=$OLTP_SEG (copied to $WORK/segments)"

# --- tool configuration ---------------------------------------------------------------------
umask 077
REPO_WALSHIP=$WORK/repos/walship
REPO_PGBR=$WORK/repos/pgbackrest
REPO_WALRUS=$WORK/repos/walrus
mkdir -p "$REPO_WALSHIP" "$REPO_PGBR" "$REPO_WALRUS" "$WORK/pgbackrest/log" "$WORK/pgbackrest/lock" \
  "$WORK/pgbackrest/spool" "$WORK/get" "$WORK/logs"

# walship: lz4 (its default) and AES-256-GCM with a 256-bit key file.
export WALSHIP_REPO=$REPO_WALSHIP
export WALSHIP_KEY_FILE=$WORK/walship.key
export WALSHIP_STANZA=bench
export WALSHIP_PG="host=$SOCK port=$PORT user=postgres dbname=postgres"
# No read-ahead: the prefetch worker is a detached process that no timer would see, and the
# segments after ours are not in the repository anyway (wal-rus: the same, below).
export WALSHIP_PREFETCH=0
openssl rand -hex 32 >"$WALSHIP_KEY_FILE"

# pgBackRest: lz4 and aes-256-cbc, synchronous archiving, no log file (console warnings only),
# so that it does no more work per command than it must.
PGBR_CONF=$WORK/pgbackrest/pgbackrest.conf
cat >"$PGBR_CONF" <<EOF
[global]
repo1-path=$REPO_PGBR
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(openssl rand -base64 48 | tr -d '\n')
compress-type=lz4
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

# wal-rus: WAL-G's settings. WALG_DOWNLOAD_CONCURRENCY=1 turns off the prefetch that
# wal-fetch would otherwise fork into a detached process.
export WALG_FILE_PREFIX=$REPO_WALRUS
export WALG_COMPRESSION_METHOD=lz4
export WALG_DOWNLOAD_CONCURRENCY=1

for t in $TOOLS; do
  case $t in
    pgbackrest)
      pgbackrest --config="$PGBR_CONF" --stanza=bench stanza-create >"$WORK/logs/pgbackrest-stanza.log" 2>&1 ||
        die "pgbackrest stanza-create failed, see $WORK/logs/pgbackrest-stanza.log"
      ;;
    walship)
      # Other walship commands create the stanza when missing; init makes it explicit.
      "$WALSHIP_BIN" init >"$WORK/logs/walship-init.log" 2>&1 ||
        log "walship init failed (archive-push creates the stanza itself), see $WORK/logs/walship-init.log"
      ;;
  esac
done
# PostgreSQL is not needed any more: stop it so that it does not compete for the CPU.
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null

# --- the commands ---------------------------------------------------------------------------
# push_cmd TOOL SEGMENT / get_cmd TOOL SEGMENT DEST: fill the array CMD.
push_cmd() {
  case $1 in
    walship) CMD=("$WALSHIP_BIN" archive-push "$WORK/segments/$2") ;;
    pgbackrest) CMD=(pgbackrest --config="$PGBR_CONF" --stanza=bench archive-push "$WORK/segments/$2") ;;
    walrus) CMD=("$WALRUS_BIN" wal-push "$WORK/segments/$2") ;;
  esac
}
get_cmd() {
  case $1 in
    walship) CMD=("$WALSHIP_BIN" archive-get "$2" "$3") ;;
    pgbackrest) CMD=(pgbackrest --config="$PGBR_CONF" --stanza=bench archive-get "$2" "$3") ;;
    walrus) CMD=("$WALRUS_BIN" wal-fetch "$2" "$3") ;;
  esac
}
repo_of() {
  case $1 in
    walship) echo "$REPO_WALSHIP" ;;
    pgbackrest) echo "$REPO_PGBR" ;;
    walrus) echo "$REPO_WALRUS" ;;
  esac
}
# The stored objects of one segment: every tool names them after the segment
# (walship <seg>..., pgBackRest <seg>-<sha1>.lz4, wal-rus wal_005/<seg>.lz4).
stored_files() { find "$(repo_of "$1")" -type f -name "$2*"; }

# bash's `times` prints the CPU time of the shell's waited-for children with millisecond
# resolution: the difference around one command is its CPU time (plus /usr/bin/time's own,
# well under a millisecond), 10x finer than GNU time's %U/%S.
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
# 0m1.234s -> TO_MS=1234, without a subshell (a subshell's CPU would count as a child's).
to_ms() {
  local v=$1 min sec
  min=${v%%m*}
  sec=${v#*m}
  sec=${sec%s}
  TO_MS=$(((10#$min * 60 + 10#${sec%.*}) * 1000 + 10#${sec#*.}))
}

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS/archive-$RUN_ID.tsv
printf 'tool\tsegment\tname\top\titer\twall_us\tcpu_user_ms\tcpu_sys_ms\ttime_e_s\ttime_U_s\ttime_S_s\tmaxrss_kib\n' >"$RAW"

# measure TOOL LABEL SEG OP ITER: run CMD once under /usr/bin/time; ITER 0 is the untimed warm-up.
measure() {
  local tool=$1 label=$2 seg=$3 op=$4 iter=$5 t0 t1 cpu0 user0 e u s m rc=0
  local tlog=$WORK/logs/$tool-$op.log
  children_ms
  cpu0=$CHILD_MS
  user0=$CHILD_USER_MS
  t0=${EPOCHREALTIME/./}
  "$TIME" -f '%e %U %S %M' -o "$WORK/time.out" "${CMD[@]}" >>"$tlog" 2>&1 || rc=$?
  t1=${EPOCHREALTIME/./}
  children_ms
  if [ "$rc" -ne 0 ]; then
    tail -n 20 "$tlog" >&2
    die "$tool $op $seg exited with $rc: ${CMD[*]} (log: $tlog)"
  fi
  # GNU time may prefix a "Command exited..." line; the numbers are on the last line.
  read -r e u s m < <(tail -n 1 "$WORK/time.out")
  if [ "$iter" -gt 0 ]; then
    printf '%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n' "$tool" "$label" "$seg" "$op" "$iter" \
      $((t1 - t0)) $((CHILD_USER_MS - user0)) $((CHILD_MS - cpu0 - (CHILD_USER_MS - user0))) \
      "$e" "$u" "$s" "$m" >>"$RAW"
  fi
}

# Other work on the machine slows every tool; a higher priority for the measured commands
# (inherited by them, the same for every tool) keeps that noise down. BENCH_NICE=0 turns it off.
NICE=${BENCH_NICE:--10}
renice -n "$NICE" -p $$ >/dev/null || log "renice $NICE failed; measuring at normal priority"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "measuring: $ITER runs (+1 warm-up) x {push, get} x {${LABELS[*]}} x {$TOOLS}"

for iter in $(seq 0 "$ITER"); do
  for i in "${!SEGS[@]}"; do
    seg=${SEGS[$i]}
    for t in $TOOLS; do
      # Untimed: remove the stored copy so that the push stores it again, not a duplicate check.
      stored_files "$t" "$seg" | xargs -r rm -f
      push_cmd "$t" "$seg"
      measure "$t" "${LABELS[$i]}" "$seg" push "$iter"
      [ -n "$(stored_files "$t" "$seg")" ] || die "$t archive-push of $seg stored nothing in $(repo_of "$t")"
    done
  done
done

SIZES=$RESULTS/archive-$RUN_ID-sizes.tsv
printf 'tool\tsegment\tname\tstored_bytes\n' >"$SIZES"
for i in "${!SEGS[@]}"; do
  for t in $TOOLS; do
    bytes=0
    while IFS= read -r f; do
      bytes=$((bytes + $(stat -c %s "$f")))
    done < <(stored_files "$t" "${SEGS[$i]}")
    printf '%s\t%s\t%s\t%d\n' "$t" "${LABELS[$i]}" "${SEGS[$i]}" "$bytes" >>"$SIZES"
  done
done

for iter in $(seq 0 "$ITER"); do
  for i in "${!SEGS[@]}"; do
    seg=${SEGS[$i]}
    for t in $TOOLS; do
      dest_dir=$WORK/get/$t-$iter-${LABELS[$i]}
      mkdir -p "$dest_dir"
      get_cmd "$t" "$seg" "$dest_dir/$seg"
      measure "$t" "${LABELS[$i]}" "$seg" get "$iter"
      cmp -s "$dest_dir/$seg" "$WORK/segments/$seg" || die "$t archive-get of $seg returned different bytes"
      rm -rf "$dest_dir"
    done
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- what ran where -------------------------------------------------------------------------
ENVF=$RESULTS/archive-$RUN_ID-env.txt
{
  echo "run: $RUN_ID (UTC)"
  echo "iterations: $ITER per tool x segment x op (+1 untimed warm-up)"
  echo "cpu: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER"
  echo "measured at nice $NICE"
  echo "postgresql: $("$PGBIN/postgres" --version)"
  for t in $TOOLS; do
    case $t in
      walship) echo "walship: $("$WALSHIP_BIN" --version 2>&1 | head -n 1) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown) + working tree)" ;;
      pgbackrest) echo "pgbackrest: $(pgbackrest version)" ;;
      walrus) echo "wal-rus: $("$WALRUS_BIN" --version 2>&1 | head -n 1)" ;;
    esac
  done
  echo "segments: bulk=$BULK_SEG oltp=$OLTP_SEG"
} >"$ENVF"

log "raw results: $RAW"
cat "$ENVF"
echo
"$BENCH_DIR/summarize.sh" "$RAW" | tee "$RESULTS/archive-$RUN_ID-summary.md"
