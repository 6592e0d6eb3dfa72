#!/usr/bin/env bash
# Install what vserver needs to build and test on Debian 12 (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=(libseccomp-dev pkg-config gcc libc6-dev busybox-static iproute2 procps util-linux python3 curl ca-certificates lxcfs nftables
      btrfs-progs xfsprogs debootstrap rsync zstd tar acl attr libcap2-bin e2fsprogs
      containerd podman openssh-client)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq || true
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Guests built from the host (`build -m host`) share its /usr: the walk-through test (tests/walkthrough.rs)
# needs sshd there. Installed without starting it, and left disabled on the host if this script
# installed it (its guests enable it in their own /etc).
if ! dpkg -s openssh-server >/dev/null 2>&1; then
  apt-get update -qq || true
  policy=/usr/sbin/policy-rc.d; own_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1; fi
  apt-get install -y -qq openssh-server >/dev/null
  [ "$own_policy" = 1 ] && rm -f "$policy"
  systemctl disable ssh.service >/dev/null 2>&1 || true
  update-rc.d ssh disable >/dev/null 2>&1 || true
fi
# The systemd lane of scripts/vm-lane.sh boots this host's own systemd and D-Bus in its VM
# (guests' scopes are registered over the system bus): installed without starting the bus here.
if ! dpkg -s systemd dbus >/dev/null 2>&1; then
  apt-get update -qq || true
  policy=/usr/sbin/policy-rc.d; own_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1; fi
  apt-get install -y -qq systemd dbus >/dev/null
  [ "$own_policy" = 1 ] && rm -f "$policy"
fi
# The CRI test (tests/oci_cri.rs): Debian's CNI plugins, and its CRI client's Python packages in a
# virtualenv of their own (crictl is built from Go modules, which this machine cannot fetch).
if ! dpkg -s containernetworking-plugins python3-venv >/dev/null 2>&1; then
  apt-get update -qq || true
  apt-get install -y -qq containernetworking-plugins python3-venv >/dev/null
fi
cri_venv=/opt/vserver-test/cri-venv
if ! "$cri_venv/bin/python3" -c 'import grpc, cri_api.v1.api_pb2' >/dev/null 2>&1; then
  rm -rf "$cri_venv"
  /usr/bin/python3 -m venv "$cri_venv"
  "$cri_venv/bin/pip" install -q --disable-pip-version-check 'container-runtime-interface-api==2.0.1'
fi
# LXCFS gives guests their own /proc/meminfo, cpuinfo, stat...; start it where no init system did.
# A mount left by an LXCFS that died answers "Transport endpoint is not connected": drop it.
if grep -q ' /var/lib/lxcfs fuse.lxcfs ' /proc/self/mounts && ! head -c1 /var/lib/lxcfs/proc/meminfo >/dev/null 2>&1; then
  umount -l /var/lib/lxcfs || true
fi
if ! grep -q ' fuse.lxcfs ' /proc/self/mounts; then
  mkdir -p /var/lib/lxcfs
  (setsid lxcfs /var/lib/lxcfs >/dev/null 2>&1 &)
  for _ in $(seq 50); do grep -q ' fuse.lxcfs ' /proc/self/mounts && break; sleep 0.1; done
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then :; else
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
  fi
fi
