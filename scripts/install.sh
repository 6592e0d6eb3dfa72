#!/usr/bin/env bash
# Install vserver: the binaries, man pages, shell completions (bash, zsh, fish), systemd units,
# the SysV init script and the README.
#   sudo bash scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--no-build]
# Binaries go to PREFIX/sbin; systemd units to PREFIX/lib/systemd/system (/etc/systemd/system
# when PREFIX is /usr/local, where systemd looks); the init script to /etc/init.d (under the
# prefix unless it is /usr or /usr/local); the README to PREFIX/share/doc/vserver.
# BUILD_DIR (default target/release) is where the binaries are taken from.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=/usr/local DESTDIR="" BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --destdir) DESTDIR=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "usage: $0 [--prefix DIR] [--destdir DIR] [--no-build]" >&2; exit 2 ;;
  esac
done
BUILD_DIR=${BUILD_DIR:-target/release}
if [ "$BUILD" = 1 ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q
fi
SBINDIR=$PREFIX/sbin DOCDIR=$PREFIX/share/doc/vserver
case "$PREFIX" in
  /usr) UNITDIR=/lib/systemd/system ETCDIR=/etc ;;
  /usr/local) UNITDIR=/etc/systemd/system ETCDIR=/etc ;;
  *) UNITDIR=$PREFIX/lib/systemd/system ETCDIR=$PREFIX/etc ;;
esac
subst() { sed -e "s|@SBINDIR@|$SBINDIR|g" -e "s|@DOCDIR@|$DOCDIR|g" "$1"; }
install -d "$DESTDIR$SBINDIR" "$DESTDIR$UNITDIR" "$DESTDIR$ETCDIR/init.d" "$DESTDIR$DOCDIR"
for b in vserver vservers vserver-stat vps vkill vtop chcontext reducecap vhashify vserver-oci; do
  install -m 755 "$BUILD_DIR/$b" "$DESTDIR$SBINDIR/$b"
done
for u in dist/systemd/*; do
  subst "$u" > "$DESTDIR$UNITDIR/$(basename "$u")"
  chmod 644 "$DESTDIR$UNITDIR/$(basename "$u")"
done
subst dist/init.d/vservers-default > "$DESTDIR$ETCDIR/init.d/vservers-default"
chmod 755 "$DESTDIR$ETCDIR/init.d/vservers-default"
install -m 644 README.md SECURITY.md docs/oci.md "$DESTDIR$DOCDIR/"
# Man pages and shell completions, generated from the binaries' own CLI definitions.
MANDIR=$PREFIX/share/man/man8
BASHDIR=$PREFIX/share/bash-completion/completions
ZSHDIR=$PREFIX/share/zsh/vendor-completions
FISHDIR=$PREFIX/share/fish/vendor_completions.d
install -d "$DESTDIR$MANDIR" "$DESTDIR$BASHDIR" "$DESTDIR$ZSHDIR" "$DESTDIR$FISHDIR"
for sub in $(VSERVER_GENERATE=subcommands "$BUILD_DIR/vserver"); do
  VSERVER_GENERATE="man:$sub" "$BUILD_DIR/vserver" > "$DESTDIR$MANDIR/vserver-$sub.8"
done
for b in vserver vservers vserver-stat vps vkill vtop chcontext reducecap vhashify vserver-oci; do
  VSERVER_GENERATE=man "$BUILD_DIR/$b" > "$DESTDIR$MANDIR/$b.8"
  VSERVER_GENERATE=bash "$BUILD_DIR/$b" > "$DESTDIR$BASHDIR/$b"
  VSERVER_GENERATE=zsh "$BUILD_DIR/$b" > "$DESTDIR$ZSHDIR/_$b"
  VSERVER_GENERATE=fish "$BUILD_DIR/$b" > "$DESTDIR$FISHDIR/$b.fish"
done
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
echo "installed to $DESTDIR$PREFIX (units in $DESTDIR$UNITDIR, init script in $DESTDIR$ETCDIR/init.d)"
