#!/usr/bin/env bash
# Set up a fresh machine for this toolkit: a virtualenv with the toolkit installed in place (editable)
# with every extra the tests use at the versions of the lock (requirements.txt), the official
# datasets in Paddle's cache (from ../shared/data when it is there), Chromium for the browser test
# and wrk for the load bench. Safe to run again: every step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# -c: the lock decides every version, pyproject.toml what is installed (README, "Install").
.venv/bin/python -m pip install -q -c requirements.txt --editable ".[test]"

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

# Debian packages: Chromium for the drawing-page test (Playwright drives it, no browser download) and
# wrk, the compiled load generator of bench/serve_load.py (a Python client would take the server's cores).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "note:$missing not installed (apt-get install$missing); the browser test needs chromium, bench/serve_load.py wrk" >&2
  fi
fi
echo "setup done: . .venv/bin/activate"
