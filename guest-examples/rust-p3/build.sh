#!/usr/bin/env bash
# Builds the WASI 0.3 example for wasm32-wasip2; wit-bindgen is pinned in
# Cargo.toml (=0.57.1) and Cargo.lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --locked --release --target wasm32-wasip2
echo "built $(pwd)/target/wasm32-wasip2/release/rust_p3.wasm"
