#!/usr/bin/env bash
# Install what tools/check_book.py needs, idempotently: Debian's Chromium (when
# /usr/bin/chromium is missing) and the pinned Playwright Python package into the project
# venv. Playwright's own browser download is never used: the check drives /usr/bin/chromium
# through executable_path, and Playwright's CDN is not reachable here.
#
#   tools/install_browser.sh            # VENV=path/to/venv to use another environment
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
pin="$(grep -E '^playwright==' "$root/requirements-dev.txt" || true)"
if [ -z "$pin" ]; then
    echo "requirements-dev.txt pins no playwright version (a line playwright==X.Y.Z)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "no Python environment at $venv: run \`make venv\` first, or set VENV" >&2
    exit 1
fi

if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

# pip leaves an already satisfied pin alone; the variable keeps any other entry point from
# fetching a browser
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/python" -m pip install --quiet "$pin"

/usr/bin/chromium --version 2>/dev/null
"$venv/bin/python" -c "from importlib.metadata import version; print('playwright', version('playwright'))"
