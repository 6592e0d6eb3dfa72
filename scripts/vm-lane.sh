#!/usr/bin/env bash
# The cgroup v2 test lane: boot a small KVM virtual machine on Debian's own kernel (package
# linux-image-amd64, unpacked, never installed on the host) with a v2-only cgroup hierarchy
# (cgroup_no_v1=all), whose root file system is this host's, read-only over virtio 9p with a
# tmpfs overlay on top, and run test binaries of this checkout there as root. The Debian kernel
# also has what this host's lacks: ext4 and xfs project quotas.
#
# Usage: bash scripts/vm-lane.sh [TEST[:FILTER]...]   (default: limits quota oci_conformance
#   systemd:full_cycle_ walkthrough:debootstrapped_ hostcrash; FILTER runs only the tests whose
#   names contain it; scripts/test.sh runs the guest, network, operations and OCI tests in the
#   systemd mode below)
#        bash scripts/vm-lane.sh --run 'COMMAND'  (a command from this checkout, as root in the
#        VM; the files it writes to bench/results/ are copied back here; used by bench/vm-start.sh)
#        VSERVER_VM_INIT=systemd bash scripts/vm-lane.sh TEST...  (the host most users run:
#        systemd as PID 1 owning the unified cgroup v2 tree, journald, the units of dist/systemd
#        installed; the tests run from a unit of the lane's, vmlane.service, in vmlane.target)
#        VSERVER_VM_CGROUP=v1 bash scripts/vm-lane.sh TEST...  (the same VM with only cgroup v1
#        hierarchies mounted, as on a host booted with systemd.unified_cgroup_hierarchy=0)
# The VM also has a disk that outlives a reset: an ext4 image (virtio, /dev/vda) mounted at
# /persist, for a test that crashes the VM (tests/hostcrash.rs). Such a test writes
# $VSERVER_VM_REBOOT and resets the machine (sysrq b: no sync, no unmount); the lane then boots
# the VM again (at most three boots) with VSERVER_VM_BOOT=2, 3 and runs from that test binary on.
# Exit status: that of the tests (or command) in the VM.
# Prints the VM's console (the test output) and ends with the tests' "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_CMD=
if [ "${1:-}" = "--run" ]; then
  RUN_CMD=${2:?--run needs a command}
  set --
fi
[ $# -gt 0 ] || [ -n "$RUN_CMD" ] || set -- limits quota oci_conformance systemd:full_cycle_ walkthrough:debootstrapped_ hostcrash
INIT=${VSERVER_VM_INIT:-sh}
export DEBIAN_FRONTEND=noninteractive
export PATH="$HOME/.cargo/bin:$PATH"
CACHE=/var/cache/vserver-vm
mkdir -p "$CACHE"

# qemu-system-x86 must match qemu-utils, which some hosts take from bookworm-backports.
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [[ "$utils" == *bpo* ]]; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" \
      >/etc/apt/sources.list.d/vserver-vm-lane-backports.list
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
  else
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
  fi
fi
command -v depmod >/dev/null 2>&1 || apt-get install -y -qq kmod >/dev/null
dpkg -s quota >/dev/null 2>&1 || apt-get install -y -qq quota >/dev/null

# Debian's kernel, unpacked into the cache (the package linux-image-amd64 depends on).
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || { echo "vm-lane: cannot find Debian's kernel package"; exit 1; }
KVER=${pkg#linux-image-}
KDIR=$CACHE/kernel-$KVER
if [ ! -e "$KDIR/boot/vmlinuz-$KVER" ]; then
  rm -rf "$KDIR" "$CACHE"/linux-image-*.deb
  (cd "$CACHE" && apt-get download -qq "$pkg" 2>/dev/null)
  dpkg-deb -x "$CACHE"/"$pkg"_*.deb "$KDIR"
  depmod -b "$KDIR" "$KVER"
  rm -f "$CACHE"/"$pkg"_*.deb
fi
MODS=$KDIR/lib/modules/$KVER

# The test binaries, built here, run there from the shared host root.
cargo build --workspace --all-targets -q
bins=()
filters=()
for spec in "${@}"; do
  t=${spec%%:*}
  if [ "$t" != "$spec" ]; then filters+=("${spec#*:}"); else filters+=(""); fi
  b=$(cargo test -q -p vserver-tools --test "$t" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["executable"])' | tail -1)
  [ -n "$b" ] || { echo "vm-lane: no test binary for $t"; exit 1; }
  bins+=("$b")
done

# The initramfs: static busybox, the modules for virtio 9p and overlayfs, and /init.
WORK=$(mktemp -d /tmp/vserver-vm-lane.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"/initrd/{bin,mods,proc,sys,dev,host,rw,newroot} "$WORK/out"
cp /bin/busybox "$WORK/initrd/bin/busybox"
order=()
add_mod() { # modules.dep order: dependencies first
  local m=$1 line dep
  line=$(grep -E "(^|/)$m\.ko(\.xz|\.zst)?:" "$MODS/modules.dep" | head -1)
  [ -n "$line" ] || return 0
  for dep in $(echo "${line#*:}" | tr ' ' '\n' | tac); do
    dep=$(basename "$dep"); dep=${dep%%.ko*}
    add_mod "$dep"
  done
  local path=${line%%:*}
  for o in "${order[@]:-}"; do [ "$o" = "$path" ] && return 0; done
  order+=("$path")
}
for m in virtio_pci 9pnet_virtio 9p overlay virtio_blk crc32c_generic ext4; do add_mod "$m"; done
: >"$WORK/initrd/mods/order"
for p in "${order[@]}"; do
  cp "$MODS/$p" "$WORK/initrd/mods/"
  basename "$p" >>"$WORK/initrd/mods/order"
done
cat >"$WORK/initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
while read -r m; do insmod /mods/$m || echo "vm-lane: insmod $m failed"; done </mods/order
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host
mount -t tmpfs -o mode=0755,size=80% rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot
mkdir -p /newroot/vmlane-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /newroot/vmlane-out
# The disk that survives a reset.
mkdir -p /newroot/persist
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /newroot/persist || echo "vm-lane: cannot mount the persistent disk"
if [ -e /newroot/vmlane-out/vmlane.service ]; then
  # systemd as PID 1: the lane's unit runs the tests; /etc/fstab (this host's disks) is ignored.
  # What an administrator changes lives on the persistent disk, as on a host's own: the unit
  # directory (which starts with the lane's units, not this host's enabled services) and
  # vserver's configs, guests and logs at their default paths.
  for d in etc/systemd/system etc/vservers var/lib/vservers var/log/vservers; do
    mkdir -p "/newroot/persist/host/$d" "/newroot/$d"
    mount --bind "/newroot/persist/host/$d" "/newroot/$d"
  done
  cp /newroot/vmlane-out/vmlane.service /newroot/vmlane-out/vmlane.target /newroot/etc/systemd/system/
  # systemd-tmpfiles empties /tmp at boot (tmp.conf's "D"): here /tmp is this host's, where
  # the checkout under test may live.
  mkdir -p /newroot/etc/tmpfiles.d
  printf 'd /tmp 1777 root root -\nd /var/tmp 1777 root root -\n' >/newroot/etc/tmpfiles.d/tmp.conf
  # This host may be a container: its marker would make systemd believe the VM is one too.
  rm -f /newroot/.dockerenv /newroot/run/.containerenv
  exec switch_root /newroot /lib/systemd/systemd --unit=vmlane.target
fi
exec switch_root /newroot /bin/sh /vmlane-out/run.sh
EOF
chmod +x "$WORK/initrd/init"
(cd "$WORK/initrd" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$WORK/initrd.gz"

# What runs inside, as PID 1 of the VM's root: the file systems a host has, v2 cgroups only,
# the kernel's modules, then the tests; their status goes back through the shared directory.
{
  echo '#!/bin/sh'
  echo 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CI=true VSERVER_IN_VM_LANE=1'
  if [ "$INIT" != systemd ]; then
  echo 'mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev'
  echo 'mkdir -p /dev/pts /dev/shm /run /tmp; mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts'
  echo 'ln -sf pts/ptmx /dev/ptmx 2>/dev/null; mount -t tmpfs tmpfs /dev/shm; mount -t tmpfs tmpfs /run'
  echo 'ln -sf /proc/self/fd /dev/fd; for i in 0 1 2; do ln -sf /proc/self/fd/$i /dev/$(echo stdin stdout stderr | cut -d" " -f$((i+1))); done'
  fi
  if [ "$INIT" = systemd ]; then
    # systemd mounted everything; the units of dist/systemd as `make install` puts them.
    echo 'export VSERVER_VM_INIT=systemd'
    for u in dist/systemd/*; do
      printf 'sed -e "s|@SBINDIR@|%s|g; s|@DOCDIR@|%s|g" %q >/etc/systemd/system/%q\n' \
        "$PWD/target/debug" "$PWD" "$PWD/$u" "$(basename "$u")"
    done
    echo 'systemctl daemon-reload'
  elif [ "${VSERVER_VM_CGROUP:-v2}" = v1 ]; then
    echo 'mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup'
    echo 'for c in cpu,cpuacct cpuset memory devices freezer blkio pids; do mkdir /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done'
    echo 'mkdir /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd'
    echo 'ln -s cpu,cpuacct /sys/fs/cgroup/cpu; ln -s cpu,cpuacct /sys/fs/cgroup/cpuacct'
    echo 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null'
  else
    echo 'mount -t cgroup2 cgroup2 /sys/fs/cgroup; mount -t bpf bpf /sys/fs/bpf 2>/dev/null'
  fi
  echo "mount --bind $MODS /lib/modules/$KVER 2>/dev/null || { mkdir -p /lib/modules/$KVER && mount --bind $MODS /lib/modules/$KVER; }"
  echo 'echo /sbin/modprobe > /proc/sys/kernel/modprobe'
  echo 'for m in loop veth bridge br_netfilter nf_tables ext4 xfs btrfs quota_v2 overlay virtio_blk; do modprobe $m 2>/dev/null; done'
  echo 'hostname vm-lane; ip link set lo up'
  # Which boot this is.
  echo 'export VSERVER_VM_PERSIST=/persist VSERVER_VM_REBOOT=/vmlane-out/reboot VSERVER_VM_BOOT=$(cat /vmlane-out/boot)'
  echo 'first=0; [ "$VSERVER_VM_BOOT" -gt 1 ] && first=$(cat /vmlane-out/current)'
  # LXCFS gives guests their own /proc/meminfo, as on the host lane.
  if [ "$INIT" = systemd ]; then
    # As a unit of its own (this host's /var/lib/lxcfs may be a dead FUSE mount seen over 9p).
    echo 'modprobe fuse 2>/dev/null; mkdir -p /run/lxcfs-vm; systemd-run --quiet --unit=vm-lxcfs lxcfs /run/lxcfs-vm'

  else
    echo 'modprobe fuse 2>/dev/null; mkdir -p /var/lib/lxcfs; (lxcfs /var/lib/lxcfs >/dev/null 2>&1 &)'
  fi
  echo 'for i in $(seq 100); do grep -q " fuse.lxcfs " /proc/self/mounts && break; sleep 0.1; done'
  echo 'echo "vm-lane: boot $VSERVER_VM_BOOT, kernel $(uname -r), cgroup: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || echo v1 only)"'
  echo 'rc=0'
  if [ -n "$RUN_CMD" ]; then
    printf '{ (cd %q && %s); echo $? >/vmlane-out/cmdrc; } 2>&1 | tee -a /vmlane-out/log\n' \
      "$PWD" "$RUN_CMD"
    echo 'rc=$(cat /vmlane-out/cmdrc 2>/dev/null || echo 1)'
    echo "mkdir -p /vmlane-out/results; cp -a $PWD/bench/results/. /vmlane-out/results/ 2>/dev/null"
  fi
  for i in "${!bins[@]}"; do
    b=${bins[$i]}
    f=${filters[$i]}
    [ -n "$b" ] || continue
    # After a reset, the binary that asked for it runs again, and those after it.
    echo "if [ $i -ge \$first ]; then echo $i >/vmlane-out/current"
    echo "echo \"vm-lane: running $b $f\""
    echo "cd $PWD && $b --test-threads=2 $f 2>&1 | tee -a /vmlane-out/log; r=\$?"
    # tee hides the status: take it from the log's last result line.
    echo 'tail -n 5 /vmlane-out/log | grep -q "test result: ok" || rc=1'
    echo 'fi'
  done
  echo 'echo $rc > /vmlane-out/rc; sync'
  echo 'echo o > /proc/sysrq-trigger; sleep 5 2>/dev/null'
} >"$WORK/out/run.sh"

if [ "$INIT" = systemd ]; then
  cat >"$WORK/out/vmlane.target" <<'EOF'
[Unit]
Description=vserver VM lane
Requires=basic.target vmlane.service
Wants=multi-user.target
After=basic.target vmlane.service
AllowIsolate=yes
EOF
  cat >"$WORK/out/vmlane.service" <<'EOF'
[Unit]
Description=vserver VM lane: the tests
After=basic.target systemd-journald.service multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh /vmlane-out/run.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity
EOF
fi

# KVM where the host has hardware virtualisation; a PVM host (module kvm_pvm: KVM without it,
# for guests built as PVM guests) cannot run Debian's kernel, so software emulation (TCG) it is.
if [ -d /sys/module/kvm_pvm ] || ! grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
  accel=(-accel tcg,thread=multi -cpu max)
  how="software emulation (this host's /dev/kvm is $( [ -d /sys/module/kvm_pvm ] && echo PVM || echo without vmx/svm), which cannot run Debian's kernel)"
else
  accel=(-enable-kvm -cpu host)
  how=KVM
fi
if [ "$INIT" = systemd ]; then
  cgroup_arg="systemd.unit=vmlane.target fstab=no systemd.unified_cgroup_hierarchy=1 systemd.getty_auto=no"
  echo "vm-lane: booting Debian kernel $KVER with systemd as PID 1 (cgroup v2) under $how for: $*"
elif [ "${VSERVER_VM_CGROUP:-v2}" = v1 ]; then
  cgroup_arg=
  echo "vm-lane: booting Debian kernel $KVER (cgroup v1 only) under $how for: $*"
else
  cgroup_arg=cgroup_no_v1=all
  echo "vm-lane: booting Debian kernel $KVER (cgroup v2 only) under $how for: $*"
fi
# The persistent disk: sparse, so 8 GiB costs what the tests write. cache=unsafe: the guest's
# own page cache is what a reset loses; what reached the virtual disk is kept by this host.
truncate -s 8G "$WORK/disk.img"
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$WORK/disk.img"
boot=1
deadline=$((SECONDS + 3000))
while :; do
  echo "$boot" >"$WORK/out/boot"
  rm -f "$WORK/out/reboot"
  timeout $((deadline - SECONDS)) qemu-system-x86_64 "${accel[@]}" -smp 2 -m 6G -nographic -no-reboot \
    -kernel "$KDIR/boot/vmlinuz-$KVER" -initrd "$WORK/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 $cgroup_arg rdinit=/init" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on \
    -virtfs local,path="$WORK/out",mount_tag=out,security_model=passthrough \
    -drive file="$WORK/disk.img",format=raw,if=virtio,cache=unsafe \
    -nic none </dev/null | tr -d '\r' | grep -v '^\[ *[0-9.]*\]' || true
  # A test reset the VM on purpose: boot it again (-no-reboot made the reset end qemu).
  if [ -e "$WORK/out/reboot" ] && [ ! -e "$WORK/out/rc" ] && [ "$boot" -lt 3 ] && [ "$SECONDS" -lt "$deadline" ]; then
    boot=$((boot + 1))
    echo "vm-lane: the VM was reset by $(cat "$WORK/out/reboot"); booting it again (boot $boot)"
    continue
  fi
  break
done
rc=$(cat "$WORK/out/rc" 2>/dev/null || echo 1)
if [ -n "$RUN_CMD" ] && [ -d "$WORK/out/results" ]; then
  # Only what the command wrote in the VM: files newer than the lane's start.
  find "$WORK/out/results" -type f -newer "$WORK/initrd.gz" -exec cp -a {} bench/results/ \;
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "vm-lane: %d passed, %d failed\n", p, f }' "$WORK/out/log" 2>/dev/null || echo "vm-lane: no test ran"
exit "$rc"
