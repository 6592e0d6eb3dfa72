#!/usr/bin/env bash
# Network benchmark, side by side in one run: TCP throughput (iperf3) and TCP round-trip latency
# (1-byte ping-pong) between a client and a server for
#   host     both on the host, over 127.0.0.1 (the floor)
#   classic  server in a classic guest (host stack + eBPF socket hooks), client on the host
#   veth     server in a veth guest on a vserver bridge, client on the host
#   veth-64k the same with `--mtu 65520` (loopback's MTU is 64 KiB)
#   macvlan  server in one macvlan guest, client in another on the same parent (the host cannot
#            reach macvlan guests)
# Rounds are interleaved (host, classic, veth, macvlan, host, ...); medians are reported, with
# each mode's ratio to the host. Writes bench/results/net.md. As root; not part of the tests.
# Usage: bash bench/net.sh [ROUNDS]   (default 3 rounds of 5 s throughput + 3000 round trips)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
bash scripts/deps.sh >/dev/null
command -v iperf3 >/dev/null || { apt-get install -y -qq iperf3 >/dev/null; }
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
V=$PWD/target/release/vserver
export VSERVER_CONFDIR=/tmp/vserver-bench/etc VSERVER_ROOTBASE=/tmp/vserver-bench/root VSERVER_RUNDIR=/tmp/vserver-bench/run VSERVER_LOGDIR=/tmp/vserver-bench/log
cleanup() {
  for g in bnv bnj bnc bnm1 bnm2; do "$V" "$g" stop >/dev/null 2>&1 || true; done
  ip link del vsbnv0 2>/dev/null || true
  ip link del vsbnj0 2>/dev/null || true
  ip link del vsbnc0 2>/dev/null || true
  ip link del vsbnm0 2>/dev/null || true
  rm -rf /tmp/vserver-bench
}
trap cleanup EXIT
cleanup
ip link add vsbnc0 type bridge && ip addr add 10.123.1.1/24 dev vsbnc0 && ip link set vsbnc0 up
ip link add vsbnm0 type veth peer name vsbnm0p && ip link set vsbnm0 up && ip link set vsbnm0p up
b() { "$V" "$1" build -m host --initstyle builtin --context "$2" --interface "$3" "${@:4}" >/dev/null; "$V" "$1" start; }
b bnv 43801 vsbnv0:10.123.0.2/24
b bnj 43805 vsbnj0:10.123.3.2/24 --mtu 65520
b bnc 43802 classic:vsbnc0:10.123.1.5/24
b bnm1 43803 macvlan:vsbnm0:10.123.2.2/24
b bnm2 43804 macvlan:vsbnm0:10.123.2.3/24

PP=$(cat <<'PY'
import socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "serve":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen()
    while True:
        c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (d := c.recv(1)):
            c.send(d)
else:
    n = int(sys.argv[4])
    c = socket.create_connection((host, port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtt = []
    for _ in range(n):
        t = time.perf_counter_ns(); c.send(b"x"); c.recv(1); rtt.append(time.perf_counter_ns() - t)
    rtt.sort(); print(rtt[len(rtt) // 2] / 1000)
PY
)
# Servers: iperf3 on 5201, ping-pong on 5202, in each place.
start_servers() { # runner addr
  $1 sh -c "iperf3 -s -D -B $2 -p 5201 >/dev/null 2>&1; (python3 -c '$PP' serve $2 5202 >/dev/null 2>&1 &)"
}
start_servers "env" 127.0.0.1
start_servers "$V bnc exec" 10.123.1.5
start_servers "$V bnv exec" 10.123.0.2
start_servers "$V bnj exec" 10.123.3.2
start_servers "$V bnm1 exec" 10.123.2.2
sleep 1
client() { # mode -> runner target
  case $1 in
    host) echo "env 127.0.0.1" ;;
    classic) echo "env 10.123.1.5" ;;
    veth) echo "env 10.123.0.2" ;;
    veth-64k) echo "env 10.123.3.2" ;;
    macvlan) echo "$V bnm2 exec 10.123.2.2" ;;
  esac
}
declare -A TP LAT
for r in $(seq "$ROUNDS"); do
  for m in host classic veth veth-64k macvlan; do
    set -- $(client $m); target=${!#}; runner=("${@:1:$#-1}")
    bps=$("${runner[@]}" iperf3 -c "$target" -p 5201 -t 5 -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
    us=$("${runner[@]}" python3 -c "$PP" ping "$target" 5202 3000)
    TP[$m]+="$bps "; LAT[$m]+="$us "
    echo "round $r $m: $(python3 -c "print(round($bps/1e9,2))") Gbit/s, median RTT $us us" >&2
  done
done
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' $1; }
mkdir -p bench/results
{
  echo "## Network: guest <-> host, side by side ($(date -u +%F), $(nproc) CPUs, $(uname -r), $ROUNDS interleaved rounds)"
  echo
  echo "| mode | TCP throughput (Gbit/s) | ratio to host | median RTT (us) | RTT ratio to host |"
  echo "|---|---|---|---|---|"
  h_tp=$(median "${TP[host]}"); h_l=$(median "${LAT[host]}")
  for m in host classic veth veth-64k macvlan; do
    tp=$(median "${TP[$m]}"); l=$(median "${LAT[$m]}")
    python3 -c "print(f'| $m | {$tp/1e9:.2f} | {$tp/$h_tp:.2f}x | {$l:.1f} | {$l/$h_l:.2f}x |')"
  done
  echo
  echo "host: client and server on 127.0.0.1. classic: server in a classic guest on a bridge address, client on the host."
  echo "veth: server in a veth guest, client on the host through the bridge (veth-64k: MTU 65520). macvlan: guest to guest on one parent."
} | tee bench/results/net.md
