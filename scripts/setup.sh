#!/usr/bin/env bash
# Set up a fresh machine for this toolkit: a virtualenv with the pinned requirements, the official
# datasets in Paddle's cache (from ../shared/data when it is there), and Chromium for the browser test.
# Safe to run again: every step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt

# Data: Paddle's dataset classes look in ~/.cache/paddle/dataset/<name>/. These machines have no
# internet, so the official files come from ../shared/data (byte-identical to Paddle's downloads).
SHARED=${TOOLKIT_DATA:-../shared/data}
for name in mnist uci_housing; do
  dest="$HOME/.cache/paddle/dataset/$name"
  if [ -d "$SHARED/$name" ]; then
    mkdir -p "$dest"
    cp -n "$SHARED/$name"/* "$dest"/
  elif [ -z "$(ls -A "$dest" 2>/dev/null)" ]; then
    echo "note: no $SHARED/$name and nothing in $dest; see README 'Data' to fetch the official files" >&2
  fi
done

# Chromium for the drawing-page test (Debian's package; Playwright drives it, no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium not installed (apt-get install chromium); the browser test needs it" >&2
  fi
fi
echo "setup done: . .venv/bin/activate"
