#!/usr/bin/env bash
# Puts Debian's promtool into ./bin without installing (or ever starting) the Prometheus server:
# downloads the `prometheus` package, unpacks it with dpkg-deb -x into a temporary directory and
# copies only usr/bin/promtool. Idempotent: does nothing when bin/promtool already runs.
# Usage: scripts/promtool.sh   (from the repository root; needs apt-get and dpkg-deb)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/bin/promtool"
if [ -x "$dest" ] && "$dest" --version >/dev/null 2>&1; then
  exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
  echo "promtool: need apt-get and dpkg-deb (Debian/Ubuntu) to fetch Debian's prometheus package" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the current directory and needs no root, only the package lists.
download() { (cd "$tmp" && apt-get download -qq prometheus); }
if ! download 2>/dev/null; then
  # A clean machine may have no package lists yet: refresh them once (root or sudo), then retry.
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "promtool: need root or sudo to run apt-get update" >&2; exit 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  download
fi
deb=("$tmp"/prometheus_*.deb)
dpkg-deb -x "${deb[0]}" "$tmp/root"
mkdir -p "$root/bin"
install -m 0755 "$tmp/root/usr/bin/promtool" "$dest.new"
mv "$dest.new" "$dest"
echo "promtool: installed $("$dest" --version 2>&1 | head -n1) into bin/"
