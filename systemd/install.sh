#!/usr/bin/env bash
# Installs energyd, energyctl and the systemd units.
#   systemd/install.sh [--prefix /usr/local] [--no-build] [--from target/debug]
# DESTDIR is honoured (packaging). After installing on a live system:
#   systemctl daemon-reload && systemctl enable --now energyd.socket
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
build=1
bindir=target/release
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --from) bindir="$2"; build=0; shift 2 ;;
    *) echo "usage: $0 [--prefix DIR] [--no-build] [--from BINDIR]" >&2; exit 2 ;;
  esac
done
dest="${DESTDIR:-}"
if [ "$build" = 1 ]; then
  cargo build --release --locked -p energyd
fi
install -d "$dest$prefix/bin" "$dest/etc/systemd/system"
install -m 0755 "$bindir/energyd" "$bindir/energyctl" "$dest$prefix/bin/"
sed "s#/usr/local/bin/energyd#$prefix/bin/energyd#" systemd/energyd.service > "$dest/etc/systemd/system/energyd.service"
install -m 0644 systemd/energyd.socket "$dest/etc/systemd/system/energyd.socket"
echo "installed energyd and energyctl in $dest$prefix/bin, units in $dest/etc/systemd/system"
