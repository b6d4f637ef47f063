#!/usr/bin/env bash
# Installs the Debian packages gradscope's export, browser tests and demos need, if any is missing.
set -euo pipefail
packages=(chromium chromium-driver dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "gradscope: please install the Debian packages: ${missing[*]} (needed for figure export and browser tests)" >&2
  exit 0
fi
echo "Installing ${missing[*]} ..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
