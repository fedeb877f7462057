#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (Debian
# packages, when missing), then formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/test-deps.sh ]; then
    scripts/test-deps.sh
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
