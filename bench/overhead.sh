#!/usr/bin/env bash
# Overhead of isolation: the same workloads on the host and inside a guest (built from the host,
# so the very same binaries), interleaved, median of ROUNDS (default 5) each:
#   cpu       `python3 -c` integer loop (pure CPU)
#   syscalls  `dd if=/dev/zero of=/dev/null bs=1 count=1000000` (two system calls per byte:
#             the seccomp filter runs on each)
#   file I/O  `dd` of 256 MiB to a file and back (fdatasync), on the guest's root vs a host
#             directory of the same filesystem
# Writes bench/results/overhead.md. As root; not part of the tests. Usage: bash bench/overhead.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
bash scripts/deps.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
B=$PWD/target/release
W=/tmp/vserver-bench-overhead
export VSERVER_CONFDIR=$W/etc VSERVER_ROOTBASE=$W/root VSERVER_RUNDIR=$W/run VSERVER_LOGDIR=$W/log
cleanup() { "$B/vserver" bov stop >/dev/null 2>&1 || true; rm -rf "$W"; }
trap cleanup EXIT
cleanup
mkdir -p "$W/hostdir"
"$B/vserver" bov build -m host --initstyle builtin --context 43893 >/dev/null 2>&1
"$B/vserver" bov start >/dev/null
CPU="/usr/bin/python3 -c 'x=0
for i in range(12_000_000): x+=i*i
'"
SYS="dd if=/dev/zero of=/dev/null bs=1 count=1000000 status=none"
io() { echo "dd if=/dev/zero of=$1/f bs=1M count=256 conv=fdatasync status=none && dd if=$1/f of=/dev/null bs=1M status=none && rm -f $1/f"; }
python3 - "$ROUNDS" "$B" "$CPU" "$SYS" "$(io "$W/hostdir")" "$(io /tmp)" <<'PY'
import os, statistics, subprocess, sys, time
rounds, B, cpu, sysc, io_host, io_guest = int(sys.argv[1]), *sys.argv[2:]
def t(cmd, guest):
    argv = [f"{B}/vserver", "bov", "exec", "/bin/sh", "-c", cmd] if guest else ["/bin/sh", "-c", cmd]
    s = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - s
work = {"cpu": (cpu, cpu), "syscalls": (sysc, sysc), "file I/O": (io_host, io_guest)}
res = {k: ([], []) for k in work}
for _ in range(rounds):
    for k, (h, g) in work.items():
        res[k][0].append(t(h, False))
        res[k][1].append(t(g, True))
out = [f"## Overhead: host vs guest ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {os.uname().release}, {rounds} interleaved rounds)", "",
       "| workload | host (s) | guest (s) | guest speed / host |", "|---|---|---|---|"]
for k, (h, g) in res.items():
    mh, mg = statistics.median(h), statistics.median(g)
    out.append(f"| {k} | {mh:.3f} | {mg:.3f} | {mh / mg:.3f}x |")
text = "\n".join(out) + "\n"
open("bench/results/overhead.md", "w").write(text)
print(text)
PY
