#!/bin/sh
# walship's archive_command hook. Copy it next to the walship binary and set, in postgresql.conf:
#
#   archive_mode = on
#   archive_command = '/usr/local/bin/archive_command.sh %p'
#
# Settings come from the environment PostgreSQL runs with (WALSHIP_REPO, WALSHIP_STANZA,
# WALSHIP_KEY_FILE, ...) or from the TOML file named by WALSHIP_CONFIG, by default
# /etc/walship/walship.toml when it exists. Never put a key or passphrase on this line.
set -eu
if [ -z "${WALSHIP_CONFIG:-}" ] && [ -r /etc/walship/walship.toml ]; then
    WALSHIP_CONFIG=/etc/walship/walship.toml
    export WALSHIP_CONFIG
fi
# exec keeps walship's exit code: 0 only once the file is durably stored.
exec "${WALSHIP_BIN:-walship}" archive-push "$1"
