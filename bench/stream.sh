#!/usr/bin/env bash
# Benchmark: continuous WAL streaming under a WAL-heavy pgbench load.
#
# Receivers, one at a time, each under the same load (pgbench TPC-B, BENCH_CLIENTS clients,
# BENCH_DURATION seconds, on one pgbench -i of scale BENCH_SCALE; a CHECKPOINT before each run
# so that every run starts with the same burst of full-page writes):
#   pg_receivewal  uncompressed, local directory, its own slot, --synchronous off, -s 1
#   walship-fs     walship stream, lz4 + AES-256-GCM, fs repository, --partial-interval 10
#   walship-s3     the same to s3s-fs on 127.0.0.1 (a real S3 server on this machine)
#   walrus         wal-rus `walrus wal-receive` (lz4, fs repository, WALG_SLOTNAME=walrus)
#
# Measured per receiver: WAL generated (pg_current_wal_lsn before/after) and its rate; the
# replication lag sampled every 0.5 s from pg_stat_replication during the load
# (pg_current_wal_lsn() - sent/write/flush_lsn, p50/p99/max); the lag when the load ends and how
# long the receiver then takes to flush everything; CPU seconds (utime+stime of the receiver
# process from /proc/<pid>/stat, from just before the load until it has caught up) per GiB of
# WAL; peak memory (VmHWM). Raw results: bench/results/stream-<run>.tsv and -samples.tsv.
#
# Normally started by bench/run.sh (installs tools, builds walship). Re-summarize old results:
#   bench/stream.sh --summarize bench/results/stream-<run>.tsv
# Environment:
#   BENCH_SCALE      pgbench scale (default 50)
#   BENCH_CLIENTS    pgbench clients (default 8; threads: 2)
#   BENCH_DURATION   seconds of load per receiver (default 60)
#   BENCH_RECEIVERS  subset of "pg_receivewal walship-fs walship-s3 walrus" (default: all)
#   BENCH_CATCHUP    seconds a receiver may take to catch up after the load (default 60)
#   BENCH_PARTIAL_WAIT  seconds more for its flush to reach the very end (default 15)
#   BENCH_KEEP       1 = keep the throwaway cluster directory and the received WAL
#   BENCH_WALSHIP_LOG  walship's log level (default warn; debug logs each segment's store time)
#   WALSHIP_BIN, WALRUS_BIN, S3S_FS_BIN, PGBIN, BENCH_USER (unprivileged user running PostgreSQL)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
RESULTS=$BENCH_DIR/results
SEG_SIZE=16777216

die() {
  echo "bench/stream.sh: $*" >&2
  exit 1
}
log() { echo "bench: $*" >&2; }

# --- summary: raw TSV -> Markdown (also usable on old results) ------------------------------
summarize() {
  local raw=$1
  [ -f "$raw" ] || die "no such file: $raw"
  awk -F'\t' -v seg="$SEG_SIZE" '
function mib(b) { return b == "" ? "n/a" : sprintf("%.1f", b / 1048576) }
function ratio(a, b) { return (b > 0 && a != "") ? sprintf("%.2f", a / b) : "n/a" }
FNR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
{
  r = $col["receiver"]; rs[++n] = r
  for (c in col) D[r, c] = $col[c]
}
END {
  print "### Per receiver (one run each, same load)"
  print ""
  print "| receiver | WAL MiB | WAL MB/s | tps | flush lag p50 / p99 / max MiB | write lag p50 / p99 MiB | sent lag p99 MiB | lag at load end (write / flush) MiB | caught up after | flushed to the end after | CPU s | CPU s / GiB | peak RSS MiB | kept up |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for (i = 1; i <= n; i++) {
    r = rs[i]
    printf "| %s | %.0f | %.1f | %.0f | %s / %s / %s | %s / %s | %s | %s / %s | %s | %s | %.2f | %.2f | %.1f | %s |\n", r,
      D[r, "wal_bytes"] / 1048576, D[r, "wal_bytes"] / 1e6 / D[r, "load_s"], D[r, "tps"],
      mib(D[r, "flush_p50"]), mib(D[r, "flush_p99"]), mib(D[r, "flush_max"]),
      mib(D[r, "write_p50"]), mib(D[r, "write_p99"]), mib(D[r, "sent_p99"]),
      mib(D[r, "end_write_lag"]), mib(D[r, "end_flush_lag"]),
      D[r, "catchup_s"] == "" ? "never" : D[r, "catchup_s"] " s",
      D[r, "flush_all_s"] == "" ? "not within the wait" : D[r, "flush_all_s"] " s",
      D[r, "cpu_s"], D[r, "cpu_s_per_gib"], D[r, "vmhwm_kib"] / 1024, D[r, "kept_up"]
  }
  base = "pg_receivewal"
  print ""
  print "### Goals (walship against pg_receivewal, same run)"
  print ""
  print "| goal | receiver | measured | verdict |"
  print "|---|---|---:|---|"
  for (i = 1; i <= n; i++) {
    r = rs[i]
    if (r !~ /^walship/) continue
    if ((base, "kept_up") in D)
      printf "| keeps up with every load pg_receivewal keeps up with | %s | %s (pg_receivewal: %s) | %s |\n", r,
        D[r, "kept_up"], D[base, "kept_up"],
        (D[base, "kept_up"] != "yes" || D[r, "kept_up"] == "yes") ? "met" : "NOT met"
    else
      printf "| keeps up with every load pg_receivewal keeps up with | %s | %s | not measured |\n", r, D[r, "kept_up"]
    printf "| p99 flush lag < 1 segment (16 MiB) | %s | %s MiB | %s |\n", r, mib(D[r, "flush_p99"]),
      (D[r, "flush_p99"] != "" && D[r, "flush_p99"] < seg) ? "met" : "NOT met"
    v = ratio(D[r, "cpu_s_per_gib"], D[base, "cpu_s_per_gib"])
    printf "| CPU per GiB <= 1.5x pg_receivewal | %s | %s x | %s |\n", r, v,
      v == "n/a" ? "not measured" : (v + 0 <= 1.5 ? "met" : "NOT met")
    printf "| peak memory <= 64 MiB | %s | %.1f MiB | %s |\n", r, D[r, "vmhwm_kib"] / 1024,
      (D[r, "vmhwm_kib"] <= 65536) ? "met" : "NOT met"
  }
  for (i = 1; i <= n; i++) {
    r = rs[i]
    if (r != "walrus") continue
    printf "| (for comparison) walship-fs CPU per GiB vs wal-rus | walship-fs | %s x | - |\n",
      ratio(D["walship-fs", "cpu_s_per_gib"], D[r, "cpu_s_per_gib"])
  }
}' "$raw"
}

if [ "${1:-}" = --summarize ]; then
  [ $# -eq 2 ] || die "usage: bench/stream.sh --summarize RESULTS.tsv"
  summarize "$2"
  exit 0
fi

SCALE=${BENCH_SCALE:-50}
CLIENTS=${BENCH_CLIENTS:-8}
DURATION=${BENCH_DURATION:-60}
CATCHUP=${BENCH_CATCHUP:-60}
PARTIAL_WAIT=${BENCH_PARTIAL_WAIT:-15}
RECEIVERS=${BENCH_RECEIVERS:-pg_receivewal walship-fs walship-s3 walrus}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_USER=${BENCH_USER:-walship-bench}
WALSHIP_BIN=${WALSHIP_BIN:-$ROOT/target/release-lto/walship}
WALRUS_BIN=${WALRUS_BIN:-$(command -v walrus || echo "$HOME/.cargo/bin/walrus")}
S3S_FS_BIN=${S3S_FS_BIN:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
PORT=5432 # private socket directory and no TCP listener: cannot clash with another cluster
CLK_TCK=$(getconf CLK_TCK)

# --- prerequisites: fail loudly, saying how to get what is missing ---------------------------
for v in SCALE CLIENTS DURATION CATCHUP PARTIAL_WAIT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer, got '${!v}'"
done
[ "$(id -u)" -eq 0 ] || die "run as root (PostgreSQL runs as the unprivileged user $BENCH_USER)"
for b in initdb pg_ctl postgres psql pgbench pg_receivewal; do
  [ -x "$PGBIN/$b" ] || die "$PGBIN/$b missing: apt-get install postgresql-15 (or set PGBIN)"
done
command -v openssl >/dev/null 2>&1 || die "openssl missing: apt-get install openssl"
for r in $RECEIVERS; do
  case $r in
    pg_receivewal) ;;
    walship-fs) [ -x "$WALSHIP_BIN" ] || die "$WALSHIP_BIN missing: cargo build --profile release-lto (bench/run.sh does it)" ;;
    walship-s3)
      [ -x "$WALSHIP_BIN" ] || die "$WALSHIP_BIN missing: cargo build --profile release-lto (bench/run.sh does it)"
      [ -x "$S3S_FS_BIN" ] || die "$S3S_FS_BIN missing: scripts/ensure-s3s.sh (or set S3S_FS_BIN)"
      ;;
    walrus) [ -x "$WALRUS_BIN" ] || die "$WALRUS_BIN missing: cargo install wal-rus --version 0.4.1 (bench/run.sh does it)" ;;
    *) die "unknown receiver '$r' in BENCH_RECEIVERS (known: pg_receivewal walship-fs walship-s3 walrus)" ;;
  esac
done
if ! id "$BENCH_USER" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_USER"
fi

# --- throwaway cluster ----------------------------------------------------------------------
CLUSTER=$(mktemp -d /tmp/walship-bench-stream.XXXXXX)
PGDATA=$CLUSTER/pgdata
SOCK=$CLUSTER/sock
WORK=$CLUSTER/work # received WAL: large, removed with the cluster
mkdir -p "$SOCK"
chown -R "$BENCH_USER:" "$CLUSTER"
chmod 0700 "$CLUSTER"
mkdir -p "$WORK/logs" "$RESULTS"

RECV_PID=
S3_PID=
SAMPLER_FLAG=$WORK/sampling
cleanup() {
  rm -f "$SAMPLER_FLAG"
  # Only the processes this script started, by their pid.
  if [ -n "$RECV_PID" ] && kill -0 "$RECV_PID" 2>/dev/null; then
    kill -TERM "$RECV_PID" 2>/dev/null || true
    wait "$RECV_PID" 2>/dev/null || true
  fi
  if [ -n "$S3_PID" ] && kill -0 "$S3_PID" 2>/dev/null; then
    kill -TERM "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
  fi
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
# The server's current end of WAL as a byte count.
cur_lsn() { psql_q "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"; }

log "initdb in $PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C >"$CLUSTER/initdb.log" 2>&1 ||
  die "initdb failed, see $CLUSTER/initdb.log"
# No checkpoint during a run except the explicit one before it (max_wal_size, timeout), so
# every run sees the same full-page-write pattern.
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PORT
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
max_wal_size = 8GB
checkpoint_timeout = 30min
shared_buffers = 256MB
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$CLUSTER/postgres.log" -w start >/dev/null ||
  die "PostgreSQL did not start, see $CLUSTER/postgres.log"

log "pgbench -i -s $SCALE"
pgbench_q -i -s "$SCALE" -q >"$WORK/logs/pgbench-init.log" 2>&1 || die "pgbench -i failed, see $WORK/logs/pgbench-init.log"

# --- receivers ------------------------------------------------------------------------------
umask 077
openssl rand -hex 32 >"$WORK/walship.key"
S3_ACCESS=AKWS$(openssl rand -hex 8 | tr a-f A-F)
S3_SECRET=$(openssl rand -hex 20)
S3_PORT=
S3_ROOT=$WORK/s3

# start_s3: s3s-fs on a free port of 127.0.0.1 with the bucket walship-bench.
start_s3() {
  mkdir -p "$S3_ROOT/walship-bench"
  S3_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000)))
  "$S3S_FS_BIN" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_ACCESS" --secret-key "$S3_SECRET" \
    "$S3_ROOT" >"$WORK/logs/s3s-fs.log" 2>&1 &
  S3_PID=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && return 0
    kill -0 "$S3_PID" 2>/dev/null || die "s3s-fs exited, see $WORK/logs/s3s-fs.log"
    sleep 0.2
  done
  die "s3s-fs did not listen on 127.0.0.1:$S3_PORT within 20 s"
}

# start_receiver NAME: start it in the background; RECV_PID is the receiving process itself
# (no wrapper), so that /proc/<pid> shows its CPU time and peak memory.
start_receiver() {
  local name=$1 rlog=$WORK/logs/$1.log
  case $name in
    pg_receivewal)
      mkdir -p "$WORK/pg_receivewal"
      "$PGBIN/pg_receivewal" -h "$SOCK" -p "$PORT" -U postgres --slot pg_receivewal --create-slot \
        >"$rlog" 2>&1 || die "pg_receivewal --create-slot failed, see $rlog"
      # -s 1: status every second instead of 10, so that pg_stat_replication shows its
      # positions at the sampling resolution (it reports only on that timer when not --synchronous).
      "$PGBIN/pg_receivewal" -h "$SOCK" -p "$PORT" -U postgres --slot pg_receivewal -D "$WORK/pg_receivewal" \
        -s 1 -n >>"$rlog" 2>&1 &
      ;;
    walship-fs | walship-s3)
      local repo
      if [ "$name" = walship-s3 ]; then
        start_s3
        repo=s3://walship-bench/repo
      else
        repo=$WORK/walship-repo
        mkdir -p "$repo"
      fi
      mkdir -p "$WORK/$name-spool"
      (
        export WALSHIP_REPO=$repo WALSHIP_KEY_FILE=$WORK/walship.key WALSHIP_STANZA=bench \
          WALSHIP_PG="host=$SOCK port=$PORT user=postgres dbname=postgres" WALSHIP_LOG=${BENCH_WALSHIP_LOG:-warn}
        if [ "$name" = walship-s3 ]; then
          export WALSHIP_S3_ENDPOINT=http://127.0.0.1:$S3_PORT WALSHIP_S3_REGION=us-east-1 \
            WALSHIP_S3_PATH_STYLE=true AWS_ACCESS_KEY_ID=$S3_ACCESS AWS_SECRET_ACCESS_KEY=$S3_SECRET
        fi
        "$WALSHIP_BIN" init >"$WORK/logs/$name-init.log" 2>&1 ||
          log "walship init failed (stream creates the stanza itself), see $WORK/logs/$name-init.log"
        exec "$WALSHIP_BIN" stream --slot walship --spool "$WORK/$name-spool" --partial-interval 10
      ) >"$rlog" 2>&1 &
      ;;
    walrus)
      mkdir -p "$WORK/walrus-repo" "$WORK/walrus-assemble"
      (
        export WALG_FILE_PREFIX=$WORK/walrus-repo WALG_COMPRESSION_METHOD=lz4 WALG_SLOTNAME=walrus \
          PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
        exec "$WALRUS_BIN" wal-receive "$WORK/walrus-assemble"
      ) >"$rlog" 2>&1 &
      ;;
  esac
  RECV_PID=$!
}

stop_receiver() {
  local name=$1
  if kill -0 "$RECV_PID" 2>/dev/null; then
    kill -TERM "$RECV_PID"
    for _ in $(seq 1 240); do
      kill -0 "$RECV_PID" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$RECV_PID" 2>/dev/null; then
      log "$name did not exit within 120 s of SIGTERM: killing it"
      kill -KILL "$RECV_PID" 2>/dev/null || true
    fi
  fi
  wait "$RECV_PID" 2>/dev/null || true
  RECV_PID=
  if [ -n "$S3_PID" ]; then
    kill -TERM "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
    S3_PID=
  fi
  # Drop every slot so that no receiver's slot holds WAL during the next one's run.
  psql_q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active" >/dev/null
}

# utime + stime of a process in clock ticks (all its threads).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# The one pg_stat_replication row (one receiver at a time), lags in bytes; flush/write are
# empty when the receiver reports them as invalid.
SAMPLE_SQL="SELECT extract(epoch FROM clock_timestamp()), application_name, state,
  pg_current_wal_lsn() - '0/0'::pg_lsn,
  pg_current_wal_lsn() - sent_lsn, pg_current_wal_lsn() - write_lsn, pg_current_wal_lsn() - flush_lsn
  FROM pg_stat_replication;"
# One psql session fed a query every 0.5 s, until the flag file is removed: no process start
# per sample competing with the receiver for the CPU.
start_sampler() {
  touch "$SAMPLER_FLAG"
  (
    while [ -e "$SAMPLER_FLAG" ]; do
      echo "$SAMPLE_SQL"
      sleep 0.5
    done
  ) | "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -XAtq -F $'\t' >"$1" 2>>"$WORK/logs/sampler.log" &
  SAMPLER_PID=$!
}
stop_sampler() {
  rm -f "$SAMPLER_FLAG"
  wait "$SAMPLER_PID" 2>/dev/null || true
}

# Nearest-rank percentile P of column C (values in bytes) of the samples file, empty cells
# ignored (mawk has no asort: sort does it).
pct() {
  awk -F'\t' -v c="$2" '$c != "" { print $c }' "$1" | sort -n | awk -v p="$3" '{ v[++n] = $1 }
    END {
      if (!n) exit
      r = int(p * n); if (r < p * n) r++; if (r < 1) r = 1
      printf "%d", v[r]
    }'
}

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS/stream-$RUN_ID.tsv
SAMPLES=$RESULTS/stream-$RUN_ID-samples.tsv
printf 'receiver\tapp_name\twal_bytes\tload_s\ttps\tsamples\tsent_p50\tsent_p99\twrite_p50\twrite_p99\tflush_p50\tflush_p99\tflush_max\tend_write_lag\tend_flush_lag\tcatchup_s\tflush_all_s\tcpu_s\tcpu_s_per_gib\tvmhwm_kib\tkept_up\n' >"$RAW"
printf 'receiver\tepoch\tapp_name\tstate\tserver_lsn\tsent_lag\twrite_lag\tflush_lag\n' >"$SAMPLES"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for r in $RECEIVERS; do
  log "$r: start, wait until it streams"
  psql_q "CHECKPOINT"
  start_receiver "$r"
  app=
  for _ in $(seq 1 120); do
    kill -0 "$RECV_PID" 2>/dev/null || {
      tail -n 20 "$WORK/logs/$r.log" >&2
      die "$r exited before streaming, see $WORK/logs/$r.log"
    }
    app=$(psql_q "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' LIMIT 1")
    [ -n "$app" ] && break
    sleep 0.5
  done
  [ -n "$app" ] || die "$r did not start streaming within 60 s, see $WORK/logs/$r.log"
  # Let it catch up with what was before the load (the start of the segment of the slot).
  sleep 2

  run_samples=$WORK/samples-$r.tsv
  cpu0=$(cpu_ticks "$RECV_PID")
  lsn0=$(cur_lsn)
  start_sampler "$run_samples"
  log "$r: pgbench -c $CLIENTS -j 2 -T $DURATION"
  t0=${EPOCHREALTIME/./}
  pgbench_q -n -c "$CLIENTS" -j 2 -T "$DURATION" >"$WORK/logs/pgbench-$r.log" 2>&1 ||
    die "pgbench failed, see $WORK/logs/pgbench-$r.log"
  t1=${EPOCHREALTIME/./}
  lsn1=$(cur_lsn)
  stop_sampler
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/logs/pgbench-$r.log" | head -n 1)
  # Lag when the load ended: the receiver's positions against the end of the load's WAL.
  IFS="|" read -r end_write end_flush < <(psql_q "SELECT COALESCE(($lsn1 - (write_lsn - '0/0'::pg_lsn))::text, ''),
      COALESCE(($lsn1 - (flush_lsn - '0/0'::pg_lsn))::text, '') FROM pg_stat_replication LIMIT 1")
  # Catching up: everything the load wrote received (write_lsn) and flushed up to the last
  # segment boundary (pg_receivewal without --synchronous fsyncs and reports flush only when a
  # segment is complete; walship's flush is what is stored). Then up to BENCH_PARTIAL_WAIT more
  # seconds for the flush to reach the very end (walship: the .partial upload).
  seg_end=$((lsn1 / SEG_SIZE * SEG_SIZE))
  catchup=
  flush_all=
  c0=${EPOCHREALTIME/./}
  deadline=$((c0 + CATCHUP * 1000000))
  while [ "${EPOCHREALTIME/./}" -lt "$deadline" ]; do
    kill -0 "$RECV_PID" 2>/dev/null || break
    IFS="|" read -r w f < <(psql_q "SELECT COALESCE((write_lsn - '0/0'::pg_lsn)::text, ''),
        COALESCE((flush_lsn - '0/0'::pg_lsn)::text, '') FROM pg_stat_replication LIMIT 1")
    now=${EPOCHREALTIME/./}
    if [ -z "$catchup" ] && [ -n "$w" ] && [ -n "$f" ] && [ "${w%.*}" -ge "$lsn1" ] && [ "${f%.*}" -ge "$seg_end" ]; then
      catchup=$(awk -v a="$c0" -v b="$now" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
      deadline=$((now + PARTIAL_WAIT * 1000000))
    fi
    if [ -n "$f" ] && [ "${f%.*}" -ge "$lsn1" ]; then
      flush_all=$(awk -v a="$c0" -v b="$now" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
      break
    fi
    sleep 0.25
  done
  if ! kill -0 "$RECV_PID" 2>/dev/null; then
    tail -n 20 "$WORK/logs/$r.log" >&2
    die "$r exited during the run, see $WORK/logs/$r.log"
  fi
  cpu1=$(cpu_ticks "$RECV_PID")
  hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$RECV_PID/status")
  stop_receiver "$r"

  sed "s/^/$r\t/" "$run_samples" >>"$SAMPLES"
  wal=$((lsn1 - lsn0))
  load_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
  cpu_s=$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
  cpu_gib=$(awk -v c="$cpu_s" -v w="$wal" 'BEGIN { printf "%.3f", c / (w / 1073741824) }')
  nsamp=$(wc -l <"$run_samples")
  # Kept up: it received the load's WAL as fast as it was written (write lag at the end of the
  # load under two segments) and flushed all of it within BENCH_CATCHUP seconds.
  kept=no
  if [ -n "$catchup" ] && [ -n "$end_write" ] && [ "${end_write%.*}" -lt $((2 * SEG_SIZE)) ]; then kept=yes; fi
  printf '%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$app" "$wal" "$load_s" \
    "${tps:-0}" "$nsamp" "$(pct "$run_samples" 5 0.5)" "$(pct "$run_samples" 5 0.99)" \
    "$(pct "$run_samples" 6 0.5)" "$(pct "$run_samples" 6 0.99)" \
    "$(pct "$run_samples" 7 0.5)" "$(pct "$run_samples" 7 0.99)" "$(pct "$run_samples" 7 1)" \
    "${end_write%.*}" "${end_flush%.*}" "$catchup" "$flush_all" "$cpu_s" "$cpu_gib" "$hwm" "$kept" >>"$RAW"
  log "$r: $((wal / 1048576)) MiB of WAL in $load_s s, CPU $cpu_s s, VmHWM $hwm KiB, caught up after ${catchup:-never} s, flushed all after ${flush_all:-never} s"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

ENVF=$RESULTS/stream-$RUN_ID-env.txt
{
  echo "run: $RUN_ID (UTC)"
  echo "load: pgbench TPC-B scale $SCALE, $CLIENTS clients, 2 threads, $DURATION s per receiver; receivers one at a time, CHECKPOINT before each"
  echo "cpu: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER"
  echo "postgresql: $("$PGBIN/postgres" --version)"
  for r in $RECEIVERS; do
    case $r in
      walship-fs) echo "walship: $("$WALSHIP_BIN" --version 2>&1 | head -n 1) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown) + working tree)" ;;
      walrus) echo "wal-rus: $("$WALRUS_BIN" --version 2>&1 | head -n 1)" ;;
      pg_receivewal) echo "pg_receivewal: $("$PGBIN/pg_receivewal" --version)" ;;
    esac
  done
} >"$ENVF"

log "raw results: $RAW (samples: $SAMPLES)"
cat "$ENVF"
echo
summarize "$RAW" | tee "$RESULTS/stream-$RUN_ID-summary.md"
