#!/usr/bin/env bash
# Boot-to-ready and clean stop of a full distribution, side by side in one run: the same Debian
# 13 (trixie, systemd 257) tree with systemd-sysv, dbus, openssh-server, nginx-light, cron,
# rsyslog and systemd-timesyncd (made once by `vserver build -m debootstrap`, or taken from the
# tests' seed in target/tmp), copied once per tool, each booted with its own systemd as pid 1,
# loopback only, interleaved round by round; median and p95 of N rounds (default 10):
#   vserver   `vserver NAME start` (returns when the guest's systemd sends READY=1) and
#             `vserver NAME stop` (SIGRTMIN+3, systemd's own shutdown, cleanup)
#   nspawn    `systemd-nspawn --register=no --keep-unit -b --private-network
#             --notify-ready=yes`, ready when it passes on READY=1 (to a socket of this
#             script's); stopped with SIGTERM (it halts the container with SIGRTMIN+3) until
#             it exits
#   lxc       `lxc-start -d` of an LXC config as Debian's templates make it
#             (lxc.include debian.common.conf: its capability drops and seccomp), no network,
#             ready when the container's systemd sends READY=1 to a socket bound in
#             (lxc.environment NOTIFY_SOCKET); `lxc-stop` (lxc.signal.halt SIGRTMIN+3)
# Writes bench/results/systemd-boot.md and .json. As root; not part of the tests.
# Usage: bash bench/systemd-boot.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-10}
bash scripts/deps.sh >/dev/null
for p in lxc systemd-container; do
  dpkg -s "$p" >/dev/null 2>&1 || apt-get install -y -qq "$p" >/dev/null
done
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
B=$PWD/target/release
W=/tmp/vserver-bench-sdboot
export VSERVER_CONFDIR=$W/etc VSERVER_ROOTBASE=$W/root VSERVER_RUNDIR=$W/run VSERVER_LOGDIR=$W/log
PKGS=openssh-server,nginx-light,cron,rsyslog,systemd-timesyncd,iproute2,procps
cleanup() {
  "$B/vserver" bsd stop >/dev/null 2>&1 || true
  lxc-stop -n bench-sd -P "$W/lxcp" -k >/dev/null 2>&1 || true
  pkill -f "systemd-nspawn.*$W/nspawn" >/dev/null 2>&1 || true
  rm -rf "$W/etc" "$W/root" "$W/run" "$W/nspawn" "$W/lxc" "$W/lxcp" "$W"/*.sock
}
trap cleanup EXIT
cleanup
mkdir -p "$W"
SEED=target/tmp/seeds/trixie/root/seed
if [ ! -e target/tmp/seeds/trixie/ok ]; then
  SEED=$W/seed/root/seed
  if [ ! -e "$W/seed/ok" ]; then
    rm -rf "$W/seed"
    VSERVER_CONFDIR=$W/seed/etc VSERVER_ROOTBASE=$W/seed/root VSERVER_RUNDIR=$W/seed/run VSERVER_LOGDIR=$W/seed/log \
      "$B/vserver" seed build -m debootstrap --dist trixie --include "$PKGS" >/dev/null
    touch "$W/seed/ok"
  fi
fi
"$B/vserver" bsd build -m rootfs --source "$SEED" --context 43895 >/dev/null 2>&1
for d in nspawn lxc; do
  cp -a --reflink=auto "$SEED" "$W/$d"
done
mkdir -p "$W/lxcp/bench-sd"
touch "$W/lxc/notify-bench"
cat >"$W/lxcp/bench-sd/config" <<EOF
lxc.include = /usr/share/lxc/config/debian.common.conf
lxc.arch = linux64
lxc.rootfs.path = dir:$W/lxc
lxc.uts.name = bench-sd
lxc.net.0.type = empty
lxc.signal.halt = SIGRTMIN+3
lxc.apparmor.profile = unconfined
lxc.environment = NOTIFY_SOCKET=/notify-bench
lxc.mount.entry = $W/lxc.sock notify-bench none bind,create=file 0 0
EOF
python3 - "$ROUNDS" "$B" "$W" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, time
rounds, B, W = int(sys.argv[1]), sys.argv[2], sys.argv[3]
DEVNULL = subprocess.DEVNULL

def notify_socket(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)
    return s

def wait_ready(s, limit=300):
    # Then the socket is closed, as vserver's monitor does: a notify socket nobody reads
    # fills (net.unix.max_dgram_qlen) and blocks the sender's pid 1 at shutdown.
    s.settimeout(limit)
    while True:
        msg = s.recv(4096)
        if b"READY=1" in msg.split(b"\n"):
            s.close()
            return

def run(*argv):
    subprocess.run(argv, check=True, stdout=DEVNULL, stderr=DEVNULL)

def vserver():
    t0 = time.monotonic()
    run(f"{B}/vserver", "bsd", "start")
    t1 = time.monotonic()
    run(f"{B}/vserver", "bsd", "stop")
    t2 = time.monotonic()
    return t1 - t0, t2 - t1

def nspawn():
    sock = notify_socket(f"{W}/nspawn.sock")
    env = dict(os.environ, NOTIFY_SOCKET=f"{W}/nspawn.sock")
    t0 = time.monotonic()
    p = subprocess.Popen(["systemd-nspawn", "--register=no", "--keep-unit", "-q", "-D",
                          f"{W}/nspawn", "-b", "--private-network", "--notify-ready=yes"],
                         stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, env=env)
    wait_ready(sock)
    t1 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=300)
    t2 = time.monotonic()
    return t1 - t0, t2 - t1

def lxc():
    sock = notify_socket(f"{W}/lxc.sock")
    t0 = time.monotonic()
    run("lxc-start", "-n", "bench-sd", "-P", f"{W}/lxcp", "-d")
    wait_ready(sock)
    t1 = time.monotonic()
    run("lxc-stop", "-n", "bench-sd", "-P", f"{W}/lxcp")
    t2 = time.monotonic()
    return t1 - t0, t2 - t1

tools = {"vserver": vserver, "systemd-nspawn": nspawn, "lxc": lxc}
res = {t: {"boot": [], "stop": []} for t in tools}
for t, f in tools.items():  # one warm-up boot each (page cache)
    f()
for r in range(rounds):
    for t, f in tools.items():
        b, s = f()
        res[t]["boot"].append(b * 1000)
        res[t]["stop"].append(s * 1000)

def p95(v):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]

summary = {t: {k: {"median_ms": statistics.median(v), "p95_ms": p95(v)} for k, v in d.items()}
           for t, d in res.items()}
peers = [t for t in tools if t != "vserver"]
fast = {k: min(summary[p][k]["median_ms"] for p in peers) for k in ("boot", "stop")}
kernel = os.uname().release
cg = "hybrid" if os.path.exists("/sys/fs/cgroup/unified") else (
    "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1")
lines = [f"# Boot-to-ready and clean stop of a Debian 13 systemd guest ({rounds} rounds, "
         f"interleaved; kernel {kernel}, cgroup {cg})", "",
         "| tool | boot median ms | boot p95 ms | boot / faster peer | stop median ms | "
         "stop p95 ms | stop / faster peer |", "|---|---|---|---|---|---|---|"]
for t in tools:
    s = summary[t]
    lines.append(f"| {t} | {s['boot']['median_ms']:.0f} | {s['boot']['p95_ms']:.0f} | "
                 f"{s['boot']['median_ms'] / fast['boot']:.2f}x | {s['stop']['median_ms']:.0f} | "
                 f"{s['stop']['p95_ms']:.0f} | {s['stop']['median_ms'] / fast['stop']:.2f}x |")
os.makedirs("bench/results", exist_ok=True)
open("bench/results/systemd-boot.md", "w").write("\n".join(lines) + "\n")
json.dump({"rounds": rounds, "kernel": kernel, "cgroup": cg, "raw": res, "summary": summary},
          open("bench/results/systemd-boot.json", "w"), indent=1)
print("\n".join(lines))
PY
