#!/bin/bash
# Installs everything the rig and the tests need on a fresh Debian 12 machine (run as root),
# and the project itself into ./.venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  python3-venv python3-dev gcc libc6-dev iproute2 nftables socat procps psmisc util-linux
  nut-server nut-client snmptrapd snmp smitools
  postgresql keepalived iputils-arping
  chromium chromium-driver
  fdisk dosfstools mtools e2fsprogs xz-utils libpq-dev
  groff-base
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi
# The rig starts its own daemons in namespaces; the packaged ones stay out of the way.
for unit in nut-server nut-monitor nut-driver snmptrapd keepalived postgresql; do
  systemctl disable --now "$unit" >/dev/null 2>&1 || true
done

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
# psycopg2 is built against Debian's libpq, as on a database server; drop an earlier -binary build
.venv/bin/pip uninstall -q -y psycopg2-binary >/dev/null 2>&1 || true
.venv/bin/pip install -q -e '.[test]'
echo "ready: $(.venv/bin/python --version), project installed in .venv"
