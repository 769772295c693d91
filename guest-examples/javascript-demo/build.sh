#!/usr/bin/env bash
# Builds app.js into a wasi:http component with wasmhost-js (../../js/wasmhost-js),
# whose instances can be reused.
# Usage: build.sh [OUTPUT.wasm]   (default: javascript-demo.wasm next to this script)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/javascript-demo.wasm}"
cd "$here"
if ! command -v npm >/dev/null; then
    echo "build.sh: Node.js 20+ with npm is needed; install it (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
# npm installs a copy of wasmhost-js from the checkout (.npmrc: install-links),
# pinned with its dependencies by its npm-shrinkwrap.json: install again when
# the copy is missing or the checkout's differs from it.
if ! diff -rq -x node_modules -x npm-shrinkwrap.json ../../js/wasmhost-js node_modules/wasmhost-js >/dev/null 2>&1; then
    npm ci --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/wasmhost-js build app.js -o "$out"
