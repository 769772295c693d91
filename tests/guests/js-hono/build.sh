#!/usr/bin/env bash
# Builds one of the test apps.
# Usage: build.sh worker|listener|fetch-event OUTPUT.wasm
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
app="$1"
out="$2"
cd "$here"
# As guest-examples/javascript-demo/build.sh: a copy of wasmhost-js, installed
# again when the checkout's differs. The tests build several apps at once:
# one installs while the others wait (a lock on this script).
exec 9<"$here/build.sh"
flock 9
if ! diff -rq -x node_modules -x npm-shrinkwrap.json ../../../js/wasmhost-js node_modules/wasmhost-js >/dev/null 2>&1; then
    npm ci --no-audit --no-fund --loglevel=error
fi
flock -u 9
case "$app" in
    fetch-event)
        node_modules/.bin/componentize-js fetch-event.js \
            --wit ../../../js/wasmhost-js/wit --world-name app -o "$out" ;;
    *) node_modules/.bin/wasmhost-js build "$app.js" -o "$out" ;;
esac
