#!/usr/bin/env bash
# The one benchmark entry point for walship.
#
#   bench/run.sh [archive|backup|restore|replay|stream|all]
#
# Installs what the benchmarks need (pgBackRest, GNU time, PostgreSQL 15, wal-rus), builds
# walship in release mode, runs the chosen benchmark(s), writes raw results to bench/results/
# and prints a summary table. Later benchmarks (backup, restore, stream) plug in as more
# words next to "archive"; "all" runs every one of them.
#
# Environment: BENCH_ITER (runs per measurement, default 15), BENCH_TOOLS (default
# "walship pgbackrest walrus"), BENCH_KEEP=1 (keep the throwaway cluster and work dir).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
WALRUS_VERSION=0.4.1

usage() {
  echo "usage: bench/run.sh [archive|backup|restore|replay|stream|all]" >&2
  echo "  archive  archive-push / archive-get per WAL segment: walship vs pgBackRest vs wal-rus" >&2
  echo "  backup   full base backup: walship vs pg_basebackup vs pgBackRest (vs wal-rus)" >&2
  echo "  restore  restore of a backup, and replay of 2 GiB of WAL: walship vs pgBackRest vs pg_wal" >&2
  echo "  replay   replay through walship archive-get at several read-ahead depths vs pg_wal" >&2
  echo "  stream   WAL streaming under pgbench: walship stream vs pg_receivewal vs wal-rus wal-receive" >&2
  echo "  all      every benchmark" >&2
}

die() {
  echo "bench/run.sh: $*" >&2
  exit 1
}

what=${1:-all}
case $what in
  archive | backup | restore | replay | stream | all) ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage
    exit 2
    ;;
esac

# apt packages: install the missing ones, or say exactly what to install.
need_apt=()
command -v pgbackrest >/dev/null 2>&1 || need_apt+=(pgbackrest)
[ -x /usr/bin/time ] || need_apt+=(time)
{ [ -x "$PGBIN/postgres" ] && [ -x "$PGBIN/pgbench" ]; } || need_apt+=(postgresql-15)
[ -x "$PGBIN/psql" ] || need_apt+=(postgresql-client-15)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    die "missing packages: ${need_apt[*]}; run as root or: sudo apt-get install ${need_apt[*]}"
  fi
  echo "bench: apt-get install ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (https://rustup.rs) first"

# wal-rus installs a binary named `walrus`. Its Cargo.lock pins a dependency version that
# some registry mirrors lack, so it is installed without --locked.
walrus_bin=$(command -v walrus || true)
if [ -z "$walrus_bin" ] && [ -x "$HOME/.cargo/bin/walrus" ]; then
  walrus_bin=$HOME/.cargo/bin/walrus
fi
if [ -z "$walrus_bin" ]; then
  echo "bench: cargo install wal-rus --version $WALRUS_VERSION (several minutes)" >&2
  cargo install wal-rus --version "$WALRUS_VERSION" ||
    die "cargo install wal-rus --version $WALRUS_VERSION failed; install it by hand and rerun"
  walrus_bin=$HOME/.cargo/bin/walrus
fi
export WALRUS_BIN=$walrus_bin

echo "bench: cargo build --profile release-lto" >&2
(cd "$ROOT" && cargo build --profile release-lto --bin walship)
export WALSHIP_BIN=${WALSHIP_BIN:-$ROOT/target/release-lto/walship}

mkdir -p "$BENCH_DIR/results"

case $what in
  archive | all)
    "$BENCH_DIR/archive.sh"
    ;;
esac
case $what in
  backup | all) "$BENCH_DIR/backup.sh" ;;
esac
case $what in
  restore | all) "$BENCH_DIR/restore.sh" ;;
esac
case $what in
  replay | all) "$BENCH_DIR/replay.sh" ;;
esac
case $what in
  stream | all) "$BENCH_DIR/stream.sh" ;;
esac
