#!/usr/bin/env bash
# Run every test as root on the real kernel (namespaces, cgroups, veths). Each test cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=4
