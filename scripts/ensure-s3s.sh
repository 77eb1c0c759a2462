#!/usr/bin/env bash
# Installs s3s-fs, the real S3 server the integration tests run against
# (see shared/design.md, "Testing"). Does nothing when it is already on PATH.
set -euo pipefail

VERSION="0.14.1"

if command -v s3s-fs >/dev/null 2>&1; then
    echo "s3s-fs already installed: $(command -v s3s-fs)"
    exit 0
fi
if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
    echo "s3s-fs is in ${CARGO_HOME:-$HOME/.cargo}/bin but that directory is not on PATH; add it:"
    echo "  export PATH=\"${CARGO_HOME:-$HOME/.cargo}/bin:\$PATH\""
    exit 0
fi

echo "installing s3s-fs ${VERSION} into ${CARGO_HOME:-$HOME/.cargo}/bin ..."
cargo install s3s-fs --version "${VERSION}" --features binary --locked
echo "installed: ${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
