#!/usr/bin/env bash
# Start latency against crun and systemd-nspawn, which cannot run on this hybrid-cgroup host:
# bench/start.sh inside the cgroup v2 VM of scripts/vm-lane.sh (Debian's kernel, v2-only
# cgroups, no systemd). Every tool runs in that same VM, interleaved, so the ratios compare
# like with like; absolute times are not this host's (under software emulation on a PVM host
# they are many times slower). Writes bench/results/start-vm.md and start-vm.json.
# As root; not part of the tests. Usage: bash bench/vm-start.sh [RUNS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
bash scripts/deps.sh >/dev/null
# The VM has no network: its packages are this host's, installed here first.
for p in runc crun lxc systemd-container; do
  dpkg -s "$p" >/dev/null 2>&1 || apt-get install -y -qq "$p" >/dev/null
done
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
bash scripts/vm-lane.sh --run "BENCH_TAG=vm bash bench/start.sh $RUNS"
cat bench/results/start-vm.md
