#!/usr/bin/env bash
# The main job end to end, as root on Debian 12: build the tools, build a guest from the host's
# distribution, set root's ssh key from a shell inside, start it (its own systemd, ssh, none of
# the host's services), manage it over ssh from the host, compare ps inside with vps outside,
# vserver-stat, stop it. Uses a scratch config/root/run tree under /tmp, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
B=$PWD/target/release
export VSERVER_CONFDIR=/tmp/vserver-demo/etc VSERVER_ROOTBASE=/tmp/vserver-demo/root VSERVER_RUNDIR=/tmp/vserver-demo/run VSERVER_LOGDIR=/tmp/vserver-demo/log
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
# The administrator's key, set from a shell inside (the guest is stopped: enter gives a
# maintenance shell and stops the guest again when it ends).
ssh-keygen -q -t ed25519 -N '' -C vserver-demo -f /tmp/vserver-demo/key
printf '\n\033[1m$ %s\033[0m\n' "$B/vserver web1 enter   # then: mkdir -m 700 /root/.ssh; echo 'ssh-ed25519 ...' > /root/.ssh/authorized_keys; exit"
printf 'mkdir -p -m 700 /root/.ssh && echo "%s" > /root/.ssh/authorized_keys && exit\n' "$(cat /tmp/vserver-demo/key.pub)" |
  script -qec "$B/vserver web1 enter" /dev/null >/dev/null
step "$B/vserver" web1 start
step "$B/vserver" web1 status
ssh_guest() {
  ssh -i /tmp/vserver-demo/key -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=accept-new \
    -o UserKnownHostsFile=/tmp/vserver-demo/known_hosts -o LogLevel=ERROR root@10.77.0.2 "$@"
}
printf '\n\033[1m$ ssh root@10.77.0.2 hostname\033[0m\n'
ssh_guest hostname
printf '\n\033[1m$ ssh root@10.77.0.2 systemctl list-units --type=service --state=running\033[0m\n'
ssh_guest systemctl list-units --type=service --state=running --no-pager --no-legend
step "$B/vserver" web1 exec ps aux
printf '\n\033[1m$ vps aux | (header and the guest'"'"'s processes)\033[0m\n'
"$B/vps" aux | awk 'NR==1 || / web1 /'
step "$B/vserver-stat"
step "$B/vserver" web1 exec sh -c 'ip link set lo down; mount -t tmpfs x /mnt; echo "(both refused: no CAP_NET_ADMIN, no CAP_SYS_ADMIN)"'
step "$B/vserver" web1 stop
step "$B/vserver" web1 status || true
