#!/usr/bin/env bash
# Benchmark: a full base backup of the same cluster (pgbench scale BENCH_SCALE, default 50).
#
#   walship backup             fs repository, lz4 + AES-256-GCM (key file); every timed run goes
#                              into an EMPTY chunk store (chunks/, bundles/, backups/ removed
#                              untimed before it), so it stores everything
#   pg_basebackup -Ft -X none  plain tar, no compression or encryption: the floor for streaming
#                              the same bytes, as the goal names it; with archive_mode on the
#                              server waits at backup stop until its archiver has the last
#                              segment, looking once a second (~1 s of every run)
#   pg_basebackup -Ft -X stream (pg_basebackup-xstream) the same without that wait: pg_basebackup
#                              then sends NOWAIT and streams the backup's WAL itself. walship also
#                              sends NOWAIT and waits for the WAL in its own repository, so this
#                              is the fair floor
#   pgbackrest backup          --type=full, lz4, aes-256-cbc, process-max=2
#   walrus backup-push         (wal-rus 0.4.1, lz4, no encryption) when installed
#
# All with a fast checkpoint; the tools take turns in every iteration (BENCH_BACKUP_ITER,
# default 3). Then one more walship backup of the unchanged cluster into the filled repository
# (the dedup case): its time and new bytes. Wall from $EPOCHREALTIME, CPU from bash `times`,
# peak RSS from /usr/bin/time %M (the tool's own process; PostgreSQL's walsender is not counted,
# for any tool).
set -euo pipefail
SCRIPT=backup.sh
# shellcheck source-path=SCRIPTDIR source=lib-cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-cluster.sh"
ITER=${BENCH_BACKUP_ITER:-3}
[[ $ITER =~ ^[1-9][0-9]*$ ]] || die "BENCH_BACKUP_ITER must be a positive integer, got '$ITER'"
TOOLS="walship pg_basebackup pg_basebackup-xstream pgbackrest"
[ "$HAVE_WALRUS" = 1 ] && TOOLS+=" walrus"
TOOLS=${BENCH_BACKUP_TOOLS:-$TOOLS}

start_cluster
wait_archived
SIZE=$(psql_q "SELECT pg_database_size('postgres')")
log "database size $((SIZE / 1048576)) MiB"

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS/backup-$RUN_ID.tsv
raw_header "$RAW"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BASEDIR=$WORK/basebackup
SKIPPED=""
log "measuring: $ITER runs x {$TOOLS}"
for iter in $(seq 1 "$ITER"); do
  for t in $TOOLS; do
    case $t in
      walship)
        rm -rf "$REPO_WALSHIP/bench/chunks" "$REPO_WALSHIP/bench/bundles" "$REPO_WALSHIP/bench/backups"
        CMD=("$WALSHIP_BIN" backup --checkpoint fast --json)
        ;;
      pg_basebackup)
        rm -rf "$BASEDIR"
        CMD=("$PGBIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -Ft -X none -c fast -D "$BASEDIR")
        ;;
      pg_basebackup-xstream)
        rm -rf "$BASEDIR-xstream"
        CMD=("$PGBIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -Ft -X stream -c fast -D "$BASEDIR-xstream")
        ;;
      pgbackrest)
        CMD=(pgbackrest --config="$PGBR_CONF" --stanza=bench --type=full backup)
        ;;
      walrus)
        CMD=("$WALRUS_BIN" backup-push --fast)
        ;;
      *) die "unknown tool '$t' (known: walship pg_basebackup pg_basebackup-xstream pgbackrest walrus)" ;;
    esac
    case " $SKIPPED " in *" $t "*) continue ;; esac
    measure "$RAW" "$t" backup "$iter" "$LOGS/$t-backup.log"
    if [ "$MEASURE_RC" -ne 0 ]; then
      [ "$t" = walrus ] || die "$t backup exited with $MEASURE_RC: ${CMD[*]} (log: $LOGS/$t-backup.log)"
      log "wal-rus backup-push failed (exit $MEASURE_RC): left out, see $LOGS/$t-backup.log"
      SKIPPED+=" walrus"
      cp "$LOGS/$t-backup.log" "$RESULTS/backup-$RUN_ID-walrus-failure.log"
    fi
  done
done
# What each stored: the last full backup of each tool.
SIZES=$RESULTS/backup-$RUN_ID-sizes.txt
{
  echo "database size: $SIZE bytes"
  echo "walship repository (chunks + bundles + backups of one backup): $(du -sb "$REPO_WALSHIP/bench/chunks" "$REPO_WALSHIP/bench/bundles" "$REPO_WALSHIP/bench/backups" 2>/dev/null | awk '{s += $1} END {print s}') bytes"
  echo "pg_basebackup tar: $(du -sb "$BASEDIR" | cut -f1) bytes"
  echo "pgbackrest backups ($ITER full): $(du -sb "$REPO_PGBR/backup" | cut -f1) bytes"
  if [ -d "$REPO_WALRUS/basebackups_005" ]; then
    echo "wal-rus basebackups: $(du -sb "$REPO_WALRUS/basebackups_005" | cut -f1) bytes"
  fi
} >"$SIZES"

# The dedup case: walship again, repository kept, nothing changed but a checkpoint.
CMD=("$WALSHIP_BIN" backup --checkpoint fast --json)
measure "$RAW" walship backup-unchanged 1 "$LOGS/walship-backup.log"
[ "$MEASURE_RC" -eq 0 ] || die "second walship backup failed, see $LOGS/walship-backup.log"
as_pg "$WALSHIP_BIN" info --json >"$RESULTS/backup-$RUN_ID-walship-info.json" ||
  die "walship info failed"
echo "walship info: see backup-$RUN_ID-walship-info.json (original_bytes, stored_bytes, new_bytes)" >>"$SIZES"
ENVF=$RESULTS/backup-$RUN_ID-env.txt
env_file "$ENVF"
echo "iterations: $ITER per tool; tools: $TOOLS; skipped: ${SKIPPED:-none}" >>"$ENVF"

log "raw results: $RAW"
cat "$ENVF" "$SIZES"
echo
summarize "$RAW" | tee "$RESULTS/backup-$RUN_ID-summary.md"
