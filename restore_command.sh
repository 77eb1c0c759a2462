#!/bin/sh
# walship's restore_command hook. Copy it next to the walship binary and set, for recovery:
#
#   restore_command = '/usr/local/bin/restore_command.sh %f %p'
#
# Settings as in archive_command.sh. Exit codes are walship archive-get's: 0 the file was
# written after verification, 1 not in the repository, 126 and above every other failure
# (PostgreSQL then stops recovery instead of ending it early at the wrong point).
set -eu
if [ -z "${WALSHIP_CONFIG:-}" ] && [ -r /etc/walship/walship.toml ]; then
    WALSHIP_CONFIG=/etc/walship/walship.toml
    export WALSHIP_CONFIG
fi
exec "${WALSHIP_BIN:-walship}" archive-get "$1" "$2"
