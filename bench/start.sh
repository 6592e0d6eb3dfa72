#!/usr/bin/env bash
# Start latency, side by side in one run: start-to-exit of /bin/true in a fresh isolated context
# from the same minimal rootfs (a static busybox tree), interleaved round by round, median and
# p95 of N runs each (default 50), each as a ratio to the floor
# `unshare -fpmiun --mount-proc chroot ROOT /bin/true` measured in the same run:
#   vserver-run    `vserver NAME run /bin/true` (a full guest: cgroup, namespaces, pivot_root,
#                  /proc, /sys, /dev, masks, seccomp, bounding set; cleaned up before it returns)
#   vserver-start  `vserver NAME start` + `vserver NAME stop` of a guest with the builtin init
#   ... (veth)     the same with a veth interface on a bridge, against `lxc-start -d` +
#                  `lxc-stop -k` of an equivalent LXC container (same tree, a sleeping init,
#                  a veth on the same bridge with its own address)
#   chcontext      `chcontext --secure /bin/true` (util-vserver's tool: new context, same root)
#   runc           `runc run` of an OCI bundle of the same tree
#   vserver-oci    `vserver-oci run` of the same bundle (the OCI front end over vserver's engine)
#   crun           `crun run`, when this host's cgroup layout lets it run (it refuses hybrid hosts)
#   lxc-execute    `lxc-execute` of the same tree
#   nspawn         `systemd-nspawn`, when it can run here (it needs systemd as init)
# Writes bench/results/start.md and bench/results/start.json (start-TAG.* with BENCH_TAG=TAG,
# e.g. bench/vm-start.sh's run in the cgroup v2 VM). As root; not part of the tests.
# Usage: bash bench/start.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-50}
bash scripts/deps.sh >/dev/null
for p in runc crun lxc systemd-container; do
  dpkg -s "$p" >/dev/null 2>&1 || apt-get install -y -qq "$p" >/dev/null
done
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
B=$PWD/target/release
W=/tmp/vserver-bench-start
export VSERVER_CONFDIR=$W/etc VSERVER_ROOTBASE=$W/root VSERVER_RUNDIR=$W/run VSERVER_LOGDIR=$W/log
cleanup() {
  "$B/vserver" bsr stop >/dev/null 2>&1 || true
  "$B/vserver" bss stop >/dev/null 2>&1 || true
  "$B/vserver" bsn stop >/dev/null 2>&1 || true
  lxc-stop -n bench-lxs -P "$W/lxcp" -k >/dev/null 2>&1 || true
  ip link del vsbrbench >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
cleanup
mkdir -p "$W/bundle/rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,root,usr}
R=$W/bundle/rootfs
cp /bin/busybox "$R/bin/"
for a in sh true; do ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"
echo 'ID=busybox' > "$R/etc/os-release"
"$B/vserver" bsr build -m rootfs --source "$R" --context 43891 >/dev/null 2>&1
"$B/vserver" bss build -m rootfs --source "$R" --context 43892 >/dev/null 2>&1
"$B/vserver" bsn build -m rootfs --source "$R" --context 43893 \
  --interface vsbrbench:10.251.7.2/24 >/dev/null 2>&1
mkdir -p "$W/lxcp"
cat >"$W/lxcs.conf" <<EOF
lxc.rootfs.path = dir:$R
lxc.uts.name = bench
lxc.init.cmd = /bin/sleep 1000
lxc.net.0.type = veth
lxc.net.0.link = vsbrbench
lxc.net.0.flags = up
lxc.net.0.ipv4.address = 10.251.7.3/24
EOF
ln -sf busybox "$R/bin/sleep"
(cd "$W/bundle" && runc spec && python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open("config.json", "w"))
PY
)
printf 'lxc.rootfs.path = dir:%s\nlxc.uts.name = bench\n' "$R" > "$W/lxc.conf"
python3 - "$RUNS" "$B" "$W" "${BENCH_TAG:-}" <<'PY'
import json, os, statistics, subprocess, sys, time
runs, B, W, tag = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
base = "bench/results/start" + (f"-{tag}" if tag else "")
v2_only = open("/proc/self/cgroup").read().strip().startswith("0::") and open("/proc/self/cgroup").read().count("\n") == 1
where = "" if not tag else f", {tag}" + (": cgroup v2 only" if v2_only else "")
R = f"{W}/bundle/rootfs"
def sh(cmd):
    return subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
tools = {
    "floor (unshare+chroot)": f"unshare -fpmiun --mount-proc chroot {R} /bin/true",
    "vserver run": f"{B}/vserver bsr run /bin/true",
    "vserver start+stop": f"{B}/vserver bss start && {B}/vserver bss stop",
    "vserver start+stop (veth)": f"{B}/vserver bsn start && {B}/vserver bsn stop",
    "lxc-start+lxc-stop -k (veth)": f"lxc-start -n bench-lxs -f {W}/lxcs.conf -d -P {W}/lxcp && lxc-stop -n bench-lxs -P {W}/lxcp -k",
    "chcontext --secure": f"{B}/chcontext --secure /bin/true",
    "runc run": f"cd {W}/bundle && runc run bench-runc",
    "vserver-oci run": f"cd {W}/bundle && {B}/vserver-oci --root {W}/oci-state run bench-oci",
    "crun run": f"cd {W}/bundle && crun run bench-crun",
    "lxc-execute": f"lxc-execute -n bench-lxc -f {W}/lxc.conf -- /bin/true",
    "systemd-nspawn": f"systemd-nspawn -q --register=no --keep-unit -D {R} /bin/true",
}
usable, skipped = {}, {}
for name, cmd in tools.items():
    if sh(cmd) == 0:
        usable[name] = cmd
    else:
        err = subprocess.run(cmd, shell=True, capture_output=True, text=True).stderr.strip().splitlines()
        skipped[name] = err[-1] if err else "failed"
times = {n: [] for n in usable}
for r in range(runs):
    for name, cmd in usable.items():
        t = time.perf_counter()
        rc = sh(cmd)
        dt = (time.perf_counter() - t) * 1e3
        if rc == 0:
            times[name].append(dt)
def p95(v):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
floor = statistics.median(times["floor (unshare+chroot)"])
rows = []
for name, v in times.items():
    med = statistics.median(v)
    rows.append((name, med, p95(v), med / floor))
json.dump({"runs": runs, "results": {n: {"median_ms": m, "p95_ms": p, "ratio": q} for n, m, p, q in rows},
           "skipped": skipped}, open(base + ".json", "w"), indent=1)
out = [f"## Start latency: /bin/true in a fresh isolated context ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {os.uname().release}{where}, {runs} interleaved runs each)", "",
       "| tool | median (ms) | p95 (ms) | median / floor |", "|---|---|---|---|"]
for n, m, p, q in rows:
    out.append(f"| {n} | {m:.1f} | {p:.1f} | {q:.2f}x |")
for n, why in skipped.items():
    out.append(f"| {n} | - | - | cannot run here: {why} |")
text = "\n".join(out) + "\n"
open(base + ".md", "w").write(text)
print(text)
PY
