#!/usr/bin/env bash
# Run every test as root on the real kernel (namespaces, cgroups, veths). Each test cleans up.
# The escape tests run twice: plain guests, then user-namespace guests.
# Then the VM lanes on Debian's kernel (scripts/vm-lane.sh; VSERVER_SKIP_VM_LANE=1 skips them):
# v2-only cgroups without systemd (limits, project quotas, systemd guests, the debootstrapped
# walk-through, a host crash); the host most users run, systemd as PID 1 owning the v2 tree
# (guests in delegated scopes, boot integration across a reboot and a reset, and the guest,
# limit, network, operations and OCI tests); and a short run with cgroup v1 only.
# Ends with one summary line over all test binaries and the lane: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --all-targets || exit 1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --no-fail-fast -- --test-threads=4 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# The escape and guest tests again, every guest in its own user namespace (escapes.md: a user-namespace
# guest must be at least as strict).
echo "== escapes.rs, hostile.rs and guest.rs with user-namespace guests (VSERVER_TEST_USERNS=1)"
VSERVER_TEST_USERNS=1 cargo test -p vserver-tools --no-fail-fast --test escapes --test hostile --test guest \
  -- --test-threads=4 2>&1 | tee -a "$log"
urc=${PIPESTATUS[0]}
[ "$urc" -eq 0 ] || rc=$urc
if [ "${VSERVER_SKIP_VM_LANE:-}" != 1 ]; then
  bash scripts/vm-lane.sh 2>&1 | tee -a "$log"
  vrc=${PIPESTATUS[0]}
  [ "$vrc" -eq 0 ] || rc=$vrc
  VSERVER_VM_INIT=systemd bash scripts/vm-lane.sh systemd_host limits guest network operations oci systemd:full_cycle_bookworm_plain 2>&1 | tee -a "$log"
  vrc=${PIPESTATUS[0]}
  [ "$vrc" -eq 0 ] || rc=$vrc
  # The same VM with cgroup v1 only: an older systemd guest boots, a newer one is refused.
  VSERVER_VM_CGROUP=v1 bash scripts/vm-lane.sh systemd:v1_ 2>&1 | tee -a "$log"
  vrc=${PIPESTATUS[0]}
  [ "$vrc" -eq 0 ] || rc=$vrc
else
  echo "vm-lane: skipped (VSERVER_SKIP_VM_LANE=1)"
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$rc"
