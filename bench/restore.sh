#!/usr/bin/env bash
# Benchmark: restore of a base backup, and replay of archived WAL (PITR to the end of the WAL).
#
# One throwaway cluster (pgbench scale BENCH_SCALE, default 50) archiving with every tool; one
# walship backup and one pgBackRest full backup of it (untimed); then BENCH_REPLAY_MIB (default
# 2048) MiB of pgbench WAL, archived by both tools (and copied plain for the local floor).
#
# restore (BENCH_RESTORE_ITER runs each, default 3, tools taking turns), into an empty directory:
#   walship restore --backup ID --archive-mode off        fs repository, lz4 + AES-256-GCM
#   pgbackrest restore --archive-mode=off                  lz4, aes-256-cbc, process-max=2
#
# replay (BENCH_REPLAY_ITER rounds, default 1): the same walship-restored directory, copied
# untimed for every mode, then the time from `pg_ctl start` to the server leaving recovery
# (no target: it replays all the WAL, then promotes):
#   local       every segment copied into pg_wal beforehand, restore_command = 'false' (floor)
#   cp          restore_command = 'cp <plain copy of the archive>/%f %p': the floor of any
#               restore_command that copies the bytes (no decoding, no network, no checks)
#   walship     the restore_command walship restore wrote (archive-get with walship's default
#               read-ahead: WALSHIP_PREFETCH is removed from PostgreSQL's environment)
#   walship-pN  the same with WALSHIP_PREFETCH=N (read-ahead of N segments)
#   pgbackrest  pgbackrest archive-get with archive-async=y, process-max=2, a spool path
set -euo pipefail
SCRIPT=restore.sh
# shellcheck source-path=SCRIPTDIR source=lib-cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-cluster.sh"
ITER=${BENCH_RESTORE_ITER:-3}
RITER=${BENCH_REPLAY_ITER:-1}
MIB=${BENCH_REPLAY_MIB:-2048}
for v in "$ITER" "$RITER" "$MIB"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "BENCH_RESTORE_ITER, BENCH_REPLAY_ITER and BENCH_REPLAY_MIB must be positive integers"
done
MODES=${BENCH_REPLAY_MODES:-local cp walship walship-p8 pgbackrest}

start_cluster
wait_archived
log "backups (untimed): walship, pgbackrest --type=full"
as_pg "$WALSHIP_BIN" backup --checkpoint fast >"$WORK/walship-backup-id" 2>"$LOGS/walship-backup.log" ||
  die "walship backup failed, see $LOGS/walship-backup.log"
BACKUP_ID=$(tr -d '[:space:]' <"$WORK/walship-backup-id")
as_pg pgbackrest --config="$PGBR_CONF" --stanza=bench --type=full backup >"$LOGS/pgbackrest-backup.log" 2>&1 ||
  die "pgbackrest backup failed, see $LOGS/pgbackrest-backup.log"
# Both backups' WAL starts before this point; the replay covers at least MIB MiB after it.
START_LSN=$(psql_q "SELECT pg_current_wal_lsn()")
psql_q "ALTER SYSTEM SET synchronous_commit = off" >/dev/null
psql_q "SELECT pg_reload_conf()" >/dev/null
log "pgbench until $MIB MiB of WAL after the backups"
t_gen=$SECONDS
while [ "$(psql_q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$START_LSN') < $MIB::bigint * 1048576")" = t ]; do
  # A checkpoint before every short run: the first change of each page after it is logged as a
  # full-page image, as in production between checkpoints (without them, pgbench at this scale
  # writes ~1 MiB of WAL per second here, and 2 GiB would take half an hour).
  psql_q "CHECKPOINT"
  pgbench_q -n -c 4 -j 2 -T 5 >>"$LOGS/pgbench-run.log" 2>&1 || die "pgbench failed, see $LOGS/pgbench-run.log"
done
# The rows at the end: what every replay must reproduce.
EXPECT=$(psql_q "SELECT sum(delta) || '/' || count(*) FROM pgbench_history")
wait_archived
END_LSN=$(psql_q "SELECT pg_current_wal_lsn()")
WAL_MIB=$(psql_q "SELECT round(pg_wal_lsn_diff('$END_LSN', '$START_LSN') / 1048576)")
log "$WAL_MIB MiB of WAL generated and archived in $((SECONDS - t_gen)) s"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS/restore-$RUN_ID.tsv
raw_header "$RAW"
# shellcheck disable=SC2034 # read by env_file
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A RESTORED_MIB
# --- restore --------------------------------------------------------------------------------
log "measuring restore: $ITER runs x {walship pgbackrest}"
for iter in $(seq 1 "$ITER"); do
  for t in walship pgbackrest; do
    d=$WORK/r-$t
    rm -rf "$d"
    as_pg mkdir -m 0700 "$d"
    case $t in
      walship) CMD=("$WALSHIP_BIN" restore --pgdata "$d" --backup "$BACKUP_ID" --archive-mode off) ;;
      pgbackrest) CMD=(pgbackrest --config="$PGBR_CONF" --stanza=bench --pg1-path="$d" --archive-mode=off restore) ;;
    esac
    measure "$RAW" "$t" restore "$iter" "$LOGS/$t-restore.log"
    [ "$MEASURE_RC" -eq 0 ] || die "$t restore exited with $MEASURE_RC: ${CMD[*]} (log: $LOGS/$t-restore.log)"
    [ -f "$d/global/pg_control" ] || die "$t restore left no global/pg_control in $d"
    RESTORED_MIB[$t]=$(du -sm "$d" | cut -f1)
  done
done
rm -rf "$WORK"/r-pgbackrest

# --- replay ---------------------------------------------------------------------------------
BASE=$WORK/r-walship # the last walship restore: the starting point of every replay
port=$PORT
seg_first=$(sed -n 's/^START WAL LOCATION: .* (file \([0-9A-F]*\))$/\1/p' "$BASE/backup_label")
[ -n "$seg_first" ] || die "no START WAL LOCATION in $BASE/backup_label"
REPLAY=$RESULTS/restore-$RUN_ID-replay.tsv
printf 'mode\tround\twall_us\twal_mib\tresult\n' >"$REPLAY"
log "measuring replay of $WAL_MIB MiB: $RITER rounds x {$MODES}"
for round in $(seq 1 "$RITER"); do
  for mode in $MODES; do
    d=$WORK/r-replay-$mode
    rm -rf "$d" "$WORK/pgbackrest/spool/archive"
    cp -a "$BASE" "$d"
    port=$((port + 1))
    cat >>"$d/postgresql.conf" <<EOF
port = $port
unix_socket_directories = '$SOCK'
EOF
    envs=()
    case $mode in
      local)
        for f in "$PGARCHIVE"/*; do
          n=$(basename "$f")
          if [[ $n =~ ^[0-9A-F]{24}$ && ! $n < $seg_first ]]; then cp "$f" "$d/pg_wal/$n"; fi
        done
        chown -R "$BENCH_USER:" "$d/pg_wal"
        echo "restore_command = 'false'" >>"$d/postgresql.auto.conf"
        ;;
      cp)
        echo "restore_command = 'cp $PGARCHIVE/%f \"%p\"'" >>"$d/postgresql.auto.conf"
        ;;
      walship) ;;
      walship-p*)
        [[ ${mode#walship-p} =~ ^[0-9]+$ ]] || die "replay mode '$mode': walship-pN takes a number of segments"
        envs=(WALSHIP_PREFETCH="${mode#walship-p}")
        ;;
      pgbackrest)
        echo "restore_command = 'pgbackrest --config=$PGBR_CONF --stanza=bench --pg1-path=$d --archive-async=y --process-max=2 archive-get %f \"%p\"'" >>"$d/postgresql.auto.conf"
        ;;
      *) die "unknown replay mode '$mode' (known: local cp walship walship-pN pgbackrest)" ;;
    esac
    t0=${EPOCHREALTIME/./}
    as_pg env -u WALSHIP_PREFETCH "${envs[@]}" "$PGBIN/pg_ctl" -D "$d" -l "$LOGS/replay-$mode-$round.log" -W start >/dev/null
    polls=0
    until [ "$(as_pg "$PGBIN/psql" -h "$SOCK" -p "$port" -U postgres -d postgres -XAtq -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do
      sleep 0.05
      polls=$((polls + 1))
      if [ $((polls % 40)) -eq 0 ] && ! as_pg "$PGBIN/pg_ctl" -D "$d" status >/dev/null 2>&1; then
        tail -n 20 "$LOGS/replay-$mode-$round.log" >&2
        die "replay $mode: the server stopped, see $LOGS/replay-$mode-$round.log"
      fi
    done
    t1=${EPOCHREALTIME/./}
    got=$(as_pg "$PGBIN/psql" -h "$SOCK" -p "$port" -U postgres -d postgres -XAtq -c "SELECT sum(delta) || '/' || count(*) FROM pgbench_history")
    result=ok
    [ "$got" = "$EXPECT" ] || result="MISMATCH($got != $EXPECT)"
    as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null
    printf '%s\t%d\t%d\t%s\t%s\n' "$mode" "$round" $((t1 - t0)) "$WAL_MIB" "$result" >>"$REPLAY"
    log "replay $mode: $(((t1 - t0) / 1000)) ms ($result)"
    [ "$result" = ok ] || die "replay $mode: rows after recovery differ from the rows at the end: $result"
    rm -rf "$d"
  done
done

ENVF=$RESULTS/restore-$RUN_ID-env.txt
env_file "$ENVF"
{
  echo "restore iterations: $ITER per tool; replay rounds: $RITER; modes: $MODES"
  echo "restored data directory: walship ${RESTORED_MIB[walship]} MiB, pgbackrest ${RESTORED_MIB[pgbackrest]} MiB"
  echo "WAL replayed: $WAL_MIB MiB (from $START_LSN to $END_LSN, plus the backups' own WAL)"
  echo "walship backup: $BACKUP_ID"
} >>"$ENVF"

log "raw results: $RAW $REPLAY"
cat "$ENVF"
echo
summarize "$RAW" | tee "$RESULTS/restore-$RUN_ID-summary.md"
echo | tee -a "$RESULTS/restore-$RUN_ID-summary.md"
awk -F'\t' '
  FNR == 1 { next }
  { k = $1; if (!(k in n)) order[++nk] = k; c = ++n[k]; V[k, c] = $3 / 1e6; mib = $4 }
  END {
    print "| replay from | rounds | wall s (median) | WAL MiB/s | wall / local |"
    print "|---|---:|---:|---:|---:|"
    for (i = 1; i <= nk; i++) {
      k = order[i]; cnt = n[k]
      for (a = 1; a <= cnt; a++) S[a] = V[k, a]
      for (a = 2; a <= cnt; a++) { v = S[a]; for (b = a - 1; b >= 1 && S[b] > v; b--) S[b + 1] = S[b]; S[b + 1] = v }
      M[k] = cnt % 2 ? S[(cnt + 1) / 2] : (S[cnt / 2] + S[cnt / 2 + 1]) / 2
      printf "| %s | %d | %.1f | %.0f | %s |\n", k, cnt, M[k], mib / M[k], ("local" in M) ? sprintf("%.2f", M[k] / M["local"]) : "n/a"
    }
  }' "$REPLAY" | tee -a "$RESULTS/restore-$RUN_ID-summary.md"
