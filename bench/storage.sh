#!/usr/bin/env bash
# Storage: build time and disk use for 1, 10 and 100 guests of one realistic base (a
# debootstrap minbase bookworm tree), copy vs clone vs template vs unify, on a scratch btrfs
# (a sparse 40G image, loop-mounted under /tmp; every guest root is a subvolume there):
#   copy (rootfs)  N x `build -m rootfs --source BASE_ROOT`: Rust's fs::copy, i.e.
#                  copy_file_range(2), which btrfs may turn into a reflink (shared extents)
#   copy (rsync)   N x `build -m rsync --source BASE_ROOT`: rsync writes every byte (never reflinks)
#   clone          N x `build -m clone --source base`: btrfs snapshots of the base's subvolume
#   template       N x `build -m template-guest --template base`: overlayfs on the base's root
#   unify          the rsync copies above, then `vhashify --all --json` (the base included);
#                  the vhashify time is its own column
# Each strategy starts from the base alone (the guests of the one before deleted with
# `vserver NAME delete --force`, the `.hash` store removed, `btrfs subvolume sync`). Disk use is
# the growth of btrfs's data + metadata "used" (`btrfs filesystem df`, logical bytes: metadata
# is DUP on one device, so it takes twice that on disk) after syncfs; "exclusive" is
# `btrfs filesystem du -s` of the guests' own directories (roots; a template guest's
# ROOT.overlay). Build times include the syncfs that puts the written data on disk. The
# setuid/setgid files of each strategy's first guest are counted against the base's. Last, one
# template guest and one plain (rootfs) guest are started and stopped, interleaved, 15 times each.
# Writes bench/results/storage.md and storage.json. As root; not part of the tests.
# Usage: bash bench/storage.sh [N...]   (default 1 10 100)
# The base is made once by `vserver base build -m debootstrap --dist bookworm` (about 30 s, from
# the host's apt mirror) and kept in /tmp/vserver-bench-base-cache/root (in a mode 0700
# directory: the tree holds setuid binaries; the cache is the one thing left behind) for reruns,
# which rebuild the base from it with `-m rsync --source` (rsync keeps the tree as it is;
# `-m rootfs` loses setuid bits, hardlinks and xattrs, see BENCHMARKS.md). `rm -rf /tmp/vserver-bench-base-cache` makes the next run
# debootstrap afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- 1 10 100
bash scripts/deps.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
W=/tmp/vserver-bench-storage
B=$W/bin
CACHE=/tmp/vserver-bench-base-cache
IMG=$W/btrfs.img
M=$W/mnt
LOG=$W/log
export VSERVER_CONFDIR=$W/etc VSERVER_ROOTBASE=$M/root VSERVER_RUNDIR=$W/run VSERVER_LOGDIR=$W/log
cleanup() ( # a subshell: `set +e` stays in here
  set +e
  v=$B/vserver
  [ -x "$v" ] || v=$PWD/target/release/vserver
  for c in "$VSERVER_CONFDIR"/*.toml; do
    [ -e "$c" ] || continue
    n=$(basename "$c" .toml)
    "$v" "$n" running >/dev/null 2>&1 && "$v" "$n" stop >/dev/null 2>&1
  done
  # Mounts below the scratch file system (a template guest's overlay), deepest first.
  awk -v m="$M" '$2 == m || index($2, m "/") == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r p; do umount "$p" 2>/dev/null || umount -l "$p"; done
  for l in $(losetup -n -O NAME -j "$IMG" 2>/dev/null); do losetup -d "$l"; done
  rm -rf "$W" "$CACHE.tmp"
)
trap cleanup EXIT
trap "exit 1" INT TERM HUP
cleanup
mkdir -p "$W/bin" "$M"
# The binaries measured, kept still for the whole run (target/ may be rebuilt meanwhile).
cp target/release/vserver target/release/vhashify "$B/"
truncate -s 40G "$IMG"
mkfs.btrfs -q "$IMG"
LOOPDEV=$(losetup -f --show "$IMG")
mount "$LOOPDEV" "$M"

now() { date +%s%N; }
# Run a command, its output to the log; on failure show the end of the log.
run() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "storage.sh: failed: $*" >&2
    tail -n 20 "$LOG" >&2
    return 1
  fi
}
# Bytes in use (data + metadata + system, logical) once everything is on disk and deleted
# subvolumes are cleaned up.
used() {
  sync -f "$M"
  btrfs subvolume sync "$M" >/dev/null
  btrfs filesystem sync "$M" >/dev/null
  btrfs filesystem df --raw "$M" | awk -F'used=' '/^(Data|Metadata|System)/ {s += $2} END {printf "%.0f\n", s}'
}
meta() { btrfs filesystem df --raw "$M" | awk -F'used=' '/^Metadata/ {s += $2} END {printf "%.0f\n", s}'; }
# Sum of the "Exclusive" column of `btrfs filesystem du -s` over the given paths.
exclusive() {
  [ $# -gt 0 ] || { echo 0; return; }
  btrfs filesystem du -s --raw "$@" | awk 'NR > 1 {s += $2} END {printf "%.0f\n", s}'
}
guests() {
  for c in "$VSERVER_CONFDIR"/*.toml; do
    [ -e "$c" ] || continue
    n=$(basename "$c" .toml)
    [ "$n" = base ] || echo "$n"
  done
}
# Back to the base alone.
reset() {
  for n in $(guests); do run "$B/vserver" "$n" delete --force; done
  rm -rf "$M/root/.hash"
  sync -f "$M"
  btrfs subvolume sync "$M" >/dev/null
}

# The base.
base_root=$M/root/base
t0=$(now)
if [ -d "$CACHE/root" ]; then
  base_how="debootstrap --variant=minbase bookworm (cached tree, copied in with -m rsync)"
  run "$B/vserver" base build -m rsync --source "$CACHE/root"
else
  base_how="debootstrap --variant=minbase bookworm (made in this run)"
  run "$B/vserver" base build -m debootstrap --dist bookworm
fi
base_s=$(( ($(now) - t0) / 1000000 ))
if [ ! -d "$CACHE/root" ]; then
  mkdir -p -m 0700 "$CACHE.tmp"
  cp -a --reflink=never "$base_root" "$CACHE.tmp/root"
  rm -rf "$CACHE" && mv "$CACHE.tmp" "$CACHE"
fi
base_bytes=$(du -sb "$base_root" | cut -f1)
base_files=$(find "$base_root" -xdev -type f | wc -l)
base_used=$(used)
echo "base $(find "$base_root" -xdev -type f \( -perm -4000 -o -perm -2000 \) | wc -l)" > "$W/suid"
echo "base: $base_how, $base_files files, $base_bytes bytes, $((base_s / 1000)).$((base_s % 1000 / 100)) s" >&2

rows=$W/rows.jsonl
: > "$rows"
row() { # strategy N build_ns unify_ns used_before used_after meta_before meta_after exclusive [unify json]
  printf '{"strategy":"%s","guests":%s,"build_ns":%s,"unify_ns":%s,"used0":%s,"used1":%s,"meta0":%s,"meta1":%s,"exclusive":%s,"unify":%s}\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10:-null}" >> "$rows"
}
own_dirs() { # the guests' own directories, for `btrfs filesystem du`
  for n in $(guests); do
    if [ -d "$M/root/$n.overlay" ]; then echo "$M/root/$n.overlay"; else echo "$M/root/$n"; fi
  done
}
for N in "$@"; do
  for s in copy rsync clone template; do
    reset
    u0=$(used); m0=$(meta)
    t0=$(now)
    for i in $(seq 1 "$N"); do
      case $s in
        copy) run "$B/vserver" "g$i" build -m rootfs --source "$base_root" ;;
        rsync) run "$B/vserver" "g$i" build -m rsync --source "$base_root" ;;
        clone) run "$B/vserver" "g$i" build -m clone --source base ;;
        template) run "$B/vserver" "g$i" build -m template-guest --template base ;;
      esac
    done
    sync -f "$M"
    t1=$(now)
    u1=$(used); m1=$(meta)
    mapfile -t dirs < <(own_dirs)
    x=$(exclusive "${dirs[@]}")
    row "$s" "$N" $((t1 - t0)) 0 "$u0" "$u1" "$m0" "$m1" "$x"
    # What the copy kept: setuid/setgid files in the first guest (the base has them in /usr/bin).
    [ "$s" = template ] || echo "$s $(find "$M/root/g1" -xdev -type f \( -perm -4000 -o -perm -2000 \) | wc -l)" >> "$W/suid"
    echo "$s N=$N: $(( (t1 - t0) / 1000000 )) ms, $(( (u1 - u0) / 1048576 )) MiB" >&2
    if [ "$s" = rsync ]; then
      t2=$(now)
      "$B/vhashify" --all --json > "$W/unify.json" 2>>"$LOG" || { tail -n 20 "$LOG" >&2; exit 1; }
      sync -f "$M"
      t3=$(now)
      u2=$(used); m2=$(meta)
      x=$(exclusive "${dirs[@]}")
      row unify "$N" $((t1 - t0)) $((t3 - t2)) "$u0" "$u2" "$m0" "$m2" "$x" "$(tail -n 1 "$W/unify.json")"
      echo "unify N=$N: $(( (t3 - t2) / 1000000 )) ms, $(( (u2 - u0) / 1048576 )) MiB" >&2
    fi
  done
done

# Start time: one template guest against one plain copy (builtin init, no interface).
reset
# Context ids of their own, away from the low ones guests of the host may be running with.
run "$B/vserver" plain build -m rootfs --source "$base_root" --context 46001
run "$B/vserver" tmpl build -m template-guest --template base --context 46002
run "$B/vserver" plain start && run "$B/vserver" plain stop   # warm-up (seccomp program cache)
starts=$W/starts
: > "$starts"
# 15 rounds, the order alternating (a single start varies by +-50 % on a small VM).
for r in $(seq 1 15); do
  order="tmpl plain"
  [ $((r % 2)) = 0 ] && order="plain tmpl"
  for g in $order; do
    t0=$(now)
    run "$B/vserver" "$g" start
    echo "$g $(( ($(now) - t0) / 1000 ))" >> "$starts"
    run "$B/vserver" "$g" stop
  done
done

mkdir -p bench/results
python3 - "$rows" "$starts" "$W/suid" "$base_how" "$base_files" "$base_bytes" "$base_s" "$base_used" \
  "$(date -u +%F)" "$(nproc)" "$(free -g | awk '/Mem:/{print $2}')" "$(uname -r)" <<'PY'
import json, statistics, sys
rows_f, starts_f, suid_f, how, files, nbytes, base_ms, base_used, day, cpus, ram, kernel = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_f)]
suid = dict(l.split() for l in open(suid_f))
starts = {}
for l in open(starts_f):
    g, us = l.split()
    starts.setdefault(g, []).append(int(us) / 1000)
json.dump({"base": {"how": how, "files": int(files), "bytes": int(nbytes), "build_ms": int(base_ms),
                    "used": int(base_used)},
           "rows": rows, "start_ms": starts, "setuid_files": suid}, open("bench/results/storage.json", "w"), indent=1)
MiB = 1 << 20
name = {"copy": "copy (-m rootfs: copy_file_range)", "rsync": "copy (-m rsync: never reflinks)",
        "clone": "clone (btrfs snapshot)", "template": "template (overlayfs)",
        "unify": "unify (rsync copies + vhashify --all)"}
out = [f"## Storage ({day}, {cpus} CPUs, {ram} GiB, {kernel})", "",
       f"Base: {how}; {int(files)} files, {int(nbytes) / MiB:.1f} MiB (du), built in "
       f"{int(base_ms) / 1000:.1f} s; btrfs data+metadata used with the base alone: "
       f"{int(base_used) / MiB:.1f} MiB.", "",
       "| strategy | guests | build total (s) | per guest (ms) | vhashify (s) | disk used (MiB) "
       "| per guest (MiB) | of which metadata (MiB) | exclusive per guest (MiB) |",
       "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    n = r["guests"]
    d = r["used1"] - r["used0"]
    m = r["meta1"] - r["meta0"]
    u = f"{r['unify_ns'] / 1e9:.1f}" if r["strategy"] == "unify" else "-"
    out.append(f"| {name[r['strategy']]} | {n} | {r['build_ns'] / 1e9:.2f} | {r['build_ns'] / 1e6 / n:.0f} "
               f"| {u} | {d / MiB:.1f} | {d / MiB / n:.2f} | {m / MiB:.1f} | {r['exclusive'] / MiB / n:.2f} |")
uni = [r for r in rows if r["strategy"] == "unify" and r["unify"]]
if uni:
    out += ["", "vhashify totals (base included): " + "; ".join(
        f"{r['guests']} guests: {r['unify']['files']} files / {r['unify']['bytes'] / MiB:.0f} MiB newly "
        f"shared of {r['unify']['scanned_files']} files / {r['unify']['scanned_bytes'] / MiB:.0f} MiB examined"
        for r in uni) + "."]
out += ["", "Setuid/setgid files in guest g1: " + ", ".join(
    f"{'base' if k == 'base' else name[k]} {v}" for k, v in suid.items()) + "."]
if starts:
    med = {g: statistics.median(v) for g, v in starts.items()}
    out += ["", f"Start (builtin init, {len(starts['tmpl'])} runs each, median): template guest "
            f"{med['tmpl']:.1f} ms, plain copy {med['plain']:.1f} ms."]
open("bench/results/storage.md", "w").write("\n".join(out) + "\n")
PY
cat bench/results/storage.md
