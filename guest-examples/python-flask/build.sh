#!/usr/bin/env bash
# Builds the Flask app into a component with the WSGI bridge in this checkout.
# Usage: build.sh [OUTPUT.wasm]   (default: python-flask.wasm next to this script)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/python-flask.wasm}"
cd "$here"
PYTHONPATH="$here/../../python/wasmhost-wsgi${PYTHONPATH:+:$PYTHONPATH}" \
    python3 -m wasmhost_wsgi build app:app -r requirements.txt -o "$out"
