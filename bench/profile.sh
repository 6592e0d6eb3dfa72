#!/usr/bin/env bash
# Where the time of `vserver NAME run /bin/true` goes, per phase, from one traced run
# (strace -f -ttt; tracing slows every system call, so read the shares, not the absolute times):
#   cli+config   from exec of vserver to the fork of the monitor (config, lock, repair, cgroups)
#   monitor      from the monitor's fork to the clone3 of the guest (timens, network prepare)
#   cgroups      the parent writing the guest into the v1 hierarchies (cgroup.procs)
#   mounts       the guest's mount work (first to last mount/pivot_root/move_mount/umount2)
#   lockdown     bounding set, seccomp, closing fds, up to the exec of the command
#   command      the command itself (exec to exit)
#   cleanup      from the command's exit to vserver's exit (monitor cleanup, run's repair)
# Writes bench/results/profile.md. As root. Usage: bash bench/profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || apt-get install -y -qq strace >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
B=$PWD/target/release
W=/tmp/vserver-bench-profile
export VSERVER_CONFDIR=$W/etc VSERVER_ROOTBASE=$W/root VSERVER_RUNDIR=$W/run VSERVER_LOGDIR=$W/log
trap 'rm -rf "$W"' EXIT
rm -rf "$W"
T=$W/tree
mkdir -p "$T"/{bin,sbin,etc,proc,sys,dev,tmp,root}
cp /bin/busybox "$T/bin/"
for a in sh true; do ln -s busybox "$T/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$T/etc/passwd"
"$B/vserver" bpr build -m rootfs --source "$T" --context 43895 >/dev/null 2>&1
"$B/vserver" bpr run /bin/true >/dev/null   # warm: the seccomp program gets compiled once
strace -f -ttt -o "$W/trace" "$B/vserver" bpr run /bin/true >/dev/null
mkdir -p bench/results
python3 - "$W/trace" <<'PY' | tee bench/results/profile.md
import re, sys
lines = open(sys.argv[1]).read().splitlines()
ev = []
for l in lines:
    m = re.match(r"(\d+)\s+(\d+\.\d+)\s+(.*)", l)
    if m:
        ev.append((int(m.group(1)), float(m.group(2)), m.group(3)))
t0, t_end = ev[0][1], ev[-1][1]
first = lambda pred: next((t for _, t, s in ev if pred(s)), None)
last = lambda pred: next((t for _, t, s in reversed(ev) if pred(s)), None)
fork_mon = first(lambda s: s.startswith(("clone(", "clone3(")) and "CLONE_NEWPID" not in s)
clone_guest = first(lambda s: s.startswith("clone3(") and "CLONE_NEWPID" in s)
mounts = [t for _, t, s in ev if s.startswith(("mount(", "pivot_root(", "move_mount(", "umount2(", "open_tree("))]
# The parent's writes of the new guest into cgroup.procs: after the clone, before its mounts.
procs = [t for _, t, s in ev if "cgroup.procs" in s and s.startswith("openat")
         and clone_guest and t >= clone_guest and (not mounts or t <= mounts[0])]
exec_cmd = first(lambda s: s.startswith('execve("/bin/true"') or s.startswith('execve("/usr/bin/true"'))
exit_cmd = None
if exec_cmd:
    pid = next(p for p, t, s in ev if t == exec_cmd and s.startswith("execve"))
    exit_cmd = next((t for p, t, s in ev if p == pid and "exited with" in s), None)
phases = [
    ("cli+config", t0, fork_mon),
    ("monitor", fork_mon, clone_guest),
    ("cgroups", clone_guest, procs[-1] if procs else clone_guest),
    ("mounts", procs[-1] if procs else clone_guest, mounts[-1] if mounts else None),
    ("lockdown", mounts[-1] if mounts else None, exec_cmd),
    ("command", exec_cmd, exit_cmd),
    ("cleanup", exit_cmd, t_end),
]
total = t_end - t0
print("## Start path profile: `vserver NAME run /bin/true` under strace -f\n")
print("| phase | ms (traced) | share |\n|---|---|---|")
for name, a, b in phases:
    if a is None or b is None or b < a:
        print(f"| {name} | - | - |")
        continue
    print(f"| {name} | {(b - a) * 1e3:.1f} | {(b - a) / total * 100:.0f}% |")
print(f"| total | {total * 1e3:.1f} | 100% |")
PY
