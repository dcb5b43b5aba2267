#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian/Ubuntu machine, then run them.
#   bash scripts/test.sh            (extra arguments go to pytest)
# System packages: Xvfb and the X/GL libraries Qt 6 needs (napari widget tests).
# Python: a virtual environment in .venv with the pins of constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libxkbcommon-x11-0 libxkbcommon0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
  libxcb-shape0 libxcb-cursor0 libegl1 libgl1 libdbus-1-3 libfontconfig1 libglib2.0-0"
missing=$(dpkg-query -W -f='${Status} ${Package}\n' $APT_PACKAGES 2>&1 | grep -v "^install ok installed" || true)
if [ -n "$missing" ]; then
  echo "== installing system packages for Qt/Xvfb"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "== installing napari-slip with its test and napari extras"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[all,test,biomed]"

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== pytest"
exec .venv/bin/python -m pytest "$@"
