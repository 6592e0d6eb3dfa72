#!/usr/bin/env bash
# Density: start N guests (static busybox, builtin init sleeping), one after another, and report
# the start time of the first and the last ten guests, the host memory used per running guest
# (MemAvailable before and after, so kernel objects and the guests' own processes count too,
# and the monitors' proportional set size alone),
# and how long `vserver-stat` and `vps ax` take with N guests running. Writes
# bench/results/density.md. As root; not part of the tests. Usage: bash bench/density.sh [N...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- 100 500 1000
bash scripts/deps.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
B=$PWD/target/release
W=/tmp/vserver-bench-density
export VSERVER_CONFDIR=$W/etc VSERVER_ROOTBASE=$W/root VSERVER_RUNDIR=$W/run VSERVER_LOGDIR=$W/log
stop_all() {
  for c in "$VSERVER_CONFDIR"/*.toml; do
    [ -e "$c" ] || continue
    n=$(basename "$c" .toml)
    "$B/vserver" "$n" stop >/dev/null 2>&1 &
    while [ "$(jobs -r | wc -l)" -ge 8 ]; do sleep 0.05; done
  done
  wait
}
cleanup() { stop_all; rm -rf "$W"; }
trap cleanup EXIT
rm -rf "$W"
T=$W/tree
mkdir -p "$T"/{bin,sbin,etc,proc,sys,dev,tmp,root}
cp /bin/busybox "$T/bin/"
for a in sh sleep true; do ln -s busybox "$T/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$T/etc/passwd"
echo 'root:x:0:' > "$T/etc/group"
mkdir -p bench/results
out=bench/results/density.md
{
  echo "## Density ($(date -u +%F), $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r))"
  echo
  echo "| guests | 1st start (ms) | last 10 starts, median (ms) | ratio | host memory per guest (MiB) | monitor PSS per guest (MiB) | vserver-stat (ms) | vps ax (ms) |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$out"
built=0
for N in "$@"; do
  while [ "$built" -lt "$N" ]; do
    built=$((built + 1))
    "$B/vserver" "d$built" build -m rootfs --source "$T" --context $((40000 + built)) >/dev/null 2>&1
  done
  # Warm up (the first start in a fresh run directory also compiles the seccomp program).
  "$B/vserver" d1 start >/dev/null && "$B/vserver" d1 stop >/dev/null

  avail0=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
  times=()
  for i in $(seq 1 "$N"); do
    t0=$(date +%s%N)
    "$B/vserver" "d$i" start >/dev/null
    times+=($(( ($(date +%s%N) - t0) / 1000 )))
  done
  sleep 1
  avail1=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
  # The monitors' proportional share (PSS): shared pages of the binary counted once overall.
  rss=$(for p in $(pgrep -x vs-monitor); do awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup 2>/dev/null; done | awk '{s+=$1} END {print s+0}')
  t0=$(date +%s%N); "$B/vserver-stat" >/dev/null; stat_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  t0=$(date +%s%N); "$B/vps" ax >/dev/null; vps_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  python3 - "$N" "$avail0" "$avail1" "$rss" "$stat_ms" "$vps_ms" "${times[@]}" >> "$out" <<'PY'
import json, statistics, sys
n, a0, a1, rss, st, vp = (int(x) for x in sys.argv[1:7])
t = [int(x) / 1000 for x in sys.argv[7:]]
json.dump({"guests": n, "start_ms": t}, open(f"bench/results/density-{n}.json", "w"))
first, last = t[0], statistics.median(t[-10:])
print(f"| {n} | {first:.1f} | {last:.1f} | {last / first:.2f}x | {(a0 - a1) / 1024 / n:.2f} | {rss / 1024 / n:.2f} | {st} | {vp} |")
PY
  stop_all
done
cat "$out"
