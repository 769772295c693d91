#!/usr/bin/env bash
# Builds app.py into a wasi:http/proxy component with componentize-py.
# Usage: build.sh [OUTPUT.wasm]   (default: python-demo.wasm next to this script)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/python-demo.wasm}"
# The version is pinned: componentize-py's generated bindings change between releases.
want="0.25.1"
if ! have="$(componentize-py --version 2>/dev/null)" || [[ "$have" != *"$want"* ]]; then
    echo "build.sh: componentize-py $want is needed (found: ${have:-none}); run: pip install componentize-py==$want" >&2
    exit 1
fi
cd "$here"
componentize-py -d "$here/../../wit" -w app componentize app -o "$out"
