#!/usr/bin/env bash
# The main job end to end, as root on Debian 12: build the tools, build a guest from the host's
# distribution, start it, reach a service inside from the host, compare ps inside with vps
# outside, vserver-stat, stop it. Uses a scratch config/root/run tree under /tmp, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
B=$PWD/target/release
export VSERVER_CONFDIR=/tmp/vserver-demo/etc VSERVER_ROOTBASE=/tmp/vserver-demo/root VSERVER_RUNDIR=/tmp/vserver-demo/run
had_bridge=0; ip link show vsbr0 >/dev/null 2>&1 && had_bridge=1
cleanup() {
  "$B/vserver" web1 stop >/dev/null 2>&1 || true
  rm -rf /tmp/vserver-demo
  [ "$had_bridge" = 1 ] || ip link del vsbr0 2>/dev/null || true
}
trap cleanup EXIT
rm -rf /tmp/vserver-demo
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step "$B/vserver" web1 build --hostname web1 --interface 10.77.0.2/24
step "$B/vserver" web1 start
step "$B/vserver" web1 status
step "$B/vserver" web1 exec sh -c 'echo "hello from $(hostname)" > /tmp/index.html; cd /tmp; (python3 -m http.server 80 --bind 10.77.0.2 >/dev/null 2>&1 &)'
printf '\n\033[1m$ (on the host) GET http://10.77.0.2/index.html\033[0m\n'
python3 - <<'PY'
import time, urllib.request
for _ in range(50):
    try:
        print(urllib.request.urlopen("http://10.77.0.2/index.html", timeout=1).read().decode().strip()); break
    except Exception:
        time.sleep(0.1)
else:
    raise SystemExit("the guest's service did not answer")
PY
step "$B/vserver" web1 exec ps aux
printf '\n\033[1m$ vps aux | (header and the guest'"'"'s processes)\033[0m\n'
"$B/vps" aux | awk 'NR==1 || / web1 /'
step "$B/vserver-stat"
step "$B/vserver" web1 exec sh -c 'ip link set lo down; mount -t tmpfs x /mnt; echo "(both refused: no CAP_NET_ADMIN, no CAP_SYS_ADMIN)"'
step "$B/vserver" web1 stop
step "$B/vserver" web1 status || true
