#!/usr/bin/env bash
# Every benchmark, then the plots: sudo bash bench/all.sh (about 40 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/start.sh
bash bench/vm-start.sh 50
bash bench/density.sh
bash bench/overhead.sh
bash bench/net.sh
bash bench/profile.sh
bash bench/storage.sh
bash bench/systemd-boot.sh
dpkg -s python3-matplotlib >/dev/null 2>&1 || apt-get install -y -qq python3-matplotlib >/dev/null
/usr/bin/python3 bench/plot.py
