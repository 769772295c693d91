#!/usr/bin/env bash
# Builds the counter for wasm32-wasip2. wasi and wit-bindgen are pinned in
# Cargo.toml and Cargo.lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --locked --release --target wasm32-wasip2
echo "built $(pwd)/target/wasm32-wasip2/release/rust_kv_counter.wasm"
