#!/usr/bin/env bash
# Installs what the console's browser test (e2e/console_browser_test.go) needs, only what is
# missing: Debian's Chromium (/usr/bin/chromium; no browser is ever downloaded by npm), Node.js
# and npm (Debian's nodejs when `node` is missing), and the test's npm packages from the lock
# file (`npm ci` in e2e/console when node_modules is missing or the lock changed since the last
# install). Idempotent and quick when everything is there.
# Usage: scripts/browser.sh   (from anywhere; `make browser-deps` runs it before `make test`)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/e2e/console"

if [ ! -x /usr/bin/chromium ]; then
  echo "browser: installing Debian's chromium (about 100 MB; a few minutes)"
  "$root/scripts/apt-install.sh" chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser: installing Debian's nodejs and npm"
  "$root/scripts/apt-install.sh" nodejs npm
fi
# playwright-core (pinned in e2e/console/package.json) runs on Node.js 18 or later.
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
  echo "browser: Node.js $(node --version) is too old for the browser test; it needs 18 or later" >&2
  exit 1
fi

# npm ci when node_modules is missing or was installed from another lock file: the lock's
# hash is kept in node_modules after a successful install.
stamp="$dir/node_modules/.campaignmesh-lock.sha256"
want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$dir/node_modules/playwright-core/package.json" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "browser: npm ci in e2e/console"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
