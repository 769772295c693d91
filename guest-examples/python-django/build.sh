#!/usr/bin/env bash
# Builds the Django project into a component with the WSGI bridge in this
# checkout. Usage: build.sh [OUTPUT.wasm]   (default: python-django.wasm here)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/python-django.wasm}"
cd "$here"
PYTHONPATH="$here/../../python/wasmhost-wsgi${PYTHONPATH:+:$PYTHONPATH}" \
    python3 -m wasmhost_wsgi build mysite.wsgi:application -r requirements.txt -o "$out"
