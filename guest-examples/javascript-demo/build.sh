#!/usr/bin/env bash
# Builds app.js into a wasi:http/proxy component with componentize-js.
# Usage: build.sh [OUTPUT.wasm]   (default: javascript-demo.wasm next to this script)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/javascript-demo.wasm}"
cd "$here"
if ! command -v npm >/dev/null; then
    echo "build.sh: Node.js 20+ with npm is needed; install it (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
# The version is pinned in package-lock.json: the engine's wasi:http version
# (and so wit/) changes between componentize-js releases.
want="0.23.0"
if [[ "$(node_modules/.bin/componentize-js --version 2>/dev/null)" != "$want" ]]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/componentize-js app.js --wit wit --world-name app -o "$out"
