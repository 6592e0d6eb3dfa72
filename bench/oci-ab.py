#!/usr/bin/env python3
"""A/B of two vserver-oci binaries: `run` of the same bundle, alternating which goes first each
round, medians of wall time and of the CPU time of the waited process. As root; not a test.

Usage: python3 bench/oci-ab.py OLD_BINARY NEW_BINARY BUNDLE_DIR [ROUNDS]
e.g. an older commit built in a worktree:
  git worktree add /tmp/old COMMIT && (cd /tmp/old && cargo build --release --bin vserver-oci)
  python3 bench/oci-ab.py /tmp/old/target/release/vserver-oci target/release/vserver-oci BUNDLE
(BUNDLE: `vserver-oci spec` in a directory with a busybox rootfs, process.args ["/bin/true"]).
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

old, new, bundle = (os.path.abspath(a) for a in sys.argv[1:4])
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 80
state = tempfile.mkdtemp(prefix="vserver-oci-ab-")
res = {"old": {"wall": [], "cpu": []}, "new": {"wall": [], "cpu": []}}
os.chdir(bundle)
try:
    for i in range(rounds):
        order = (("old", old), ("new", new)) if i % 2 == 0 else (("new", new), ("old", old))
        for w, b in order:
            t = time.perf_counter()
            p = subprocess.Popen([b, "--root", os.path.join(state, w), "run", f"ab{i}-{w}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, st, ru = os.wait4(p.pid, 0)
            if st != 0:
                sys.exit(f"{w}: run {i} failed ({st})")
            res[w]["wall"].append((time.perf_counter() - t) * 1000)
            res[w]["cpu"].append((ru.ru_utime + ru.ru_stime) * 1000)
finally:
    shutil.rmtree(state, ignore_errors=True)
med = {w: {k: statistics.median(v[5:]) for k, v in res[w].items()} for w in res}
for w in ("old", "new"):
    print(f"{w}: wall median {med[w]['wall']:.1f} ms, CPU median {med[w]['cpu']:.1f} ms")
print(f"new/old: wall {med['new']['wall'] / med['old']['wall']:.3f}, "
      f"CPU {med['new']['cpu'] / med['old']['cpu']:.3f}")
