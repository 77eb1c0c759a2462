#!/usr/bin/env bash
# Run the protocol integration tests against every supported PostgreSQL major.
#
# Usage: scripts/test-all-majors.sh [MAJOR...]     (default: 13 14 15 16 17 18)
#
# 15 is Debian's (/usr/lib/postgresql/15/bin, `apt-get install postgresql-15`);
# the others are fetched into .pg/MAJOR with scripts/fetch-pg.sh when missing.
# Extra cargo test arguments can be passed in CARGO_TEST_ARGS (for example a
# test name filter). Prints a per-major summary; exits 1 when any major failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

majors=("$@")
if [ "${#majors[@]}" -eq 0 ]; then
    majors=(13 14 15 16 17 18)
fi

# Build once, outside the per-major loop, so a compile error is reported once.
if ! cargo test --test protocol --no-run; then
    echo "build failed" >&2
    exit 1
fi

declare -A result
failed=0
for major in "${majors[@]}"; do
    if [ "$major" = 15 ] && [ -x /usr/lib/postgresql/15/bin/postgres ]; then
        bin=/usr/lib/postgresql/15/bin
    else
        if ! "$root/scripts/fetch-pg.sh" "$major" >/dev/null; then
            result[$major]="FETCH FAILED"
            failed=1
            continue
        fi
        bin="$root/.pg/$major/bin"
    fi
    echo "=== PostgreSQL $major ($bin)" >&2
    log="$(mktemp)"
    # shellcheck disable=SC2086 # CARGO_TEST_ARGS is split on purpose
    if WALSHIP_PG_BIN="$bin" cargo test --test protocol ${CARGO_TEST_ARGS:-} 2>&1 | tee "$log"; then
        status=ok
    else
        status=FAILED
        failed=1
    fi
    summary="$(grep -E '^test result:' "$log" | tail -n 1)"
    summary="${summary#test result: }"
    summary="${summary#ok. }"
    result[$major]="$status: ${summary#FAILED. }"
    rm -f "$log"
done

echo
echo "protocol tests per PostgreSQL major:"
for major in "${majors[@]}"; do
    printf '  %-3s %s\n' "$major" "${result[$major]}"
done
exit "$failed"
