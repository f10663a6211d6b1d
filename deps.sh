#!/bin/sh
# Install what cnngen needs from Debian, only what is missing. Run as root (or via sudo).
set -e
PKGS="build-essential clang libclang-rt-14-dev pkg-config lua5.4 liblua5.4-dev libyaml-dev check libzip-dev zip zlib1g-dev python3 python3-numpy python3-yaml python3-torch dataset-fashion-mnist gnuplot-nox openmpi-bin libopenmpi-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps.sh: installing:$missing"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
