#!/usr/bin/env bash
# A quick side-by-side: wasmhost vs `wasmtime serve` on the Rust hello
# component, one wrk run each, same machine, same run. Prints req/s for both
# and the ratio. (The full benchmark harness is bench/run, issue 5.)
#
# Usage: bench/quick-compare.sh [SECONDS] [CONNECTIONS]
# Needs: wrk (apt-get install wrk). Installs wasmtime-cli 48.0.8 into
# $WASMHOST_BENCH_CACHE (default ~/.cache/wasmhost/bench) on first use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-8}"
connections="${2:-16}"
cache="${WASMHOST_BENCH_CACHE:-$HOME/.cache/wasmhost/bench}"
# Users run without it; with it every error value captures a backtrace.
unset RUST_BACKTRACE

command -v wrk >/dev/null || { echo "quick-compare: wrk is needed: apt-get install wrk" >&2; exit 1; }
wasmtime="$cache/wasmtime-cli/bin/wasmtime"
if [[ ! -x "$wasmtime" ]]; then
    echo "--- installing wasmtime-cli 48.0.8 into $cache (takes ~10 minutes once)"
    cargo install wasmtime-cli --version 48.0.8 --locked --root "$cache/wasmtime-cli"
fi
cargo build --release -p wasmhost
wasmhost="${CARGO_TARGET_DIR:-target}/release/wasmhost"
app=guest-examples/rust-hello/hello.wasm

port_wasmhost=18480
port_wasmtime=18481
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

wait_ready() {
    for _ in $(seq 1 600); do
        curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "quick-compare: server on port $1 did not come up" >&2
    exit 1
}

measure() { # name port
    wait_ready "$2"
    wrk -t1 -c"$connections" -d2s "http://127.0.0.1:$2/" >/dev/null   # warm-up
    local out
    out="$(wrk -t1 -c"$connections" -d"${seconds}s" --latency "http://127.0.0.1:$2/")"
    local rps p99 errors
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    errors="$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)"
    printf '%-16s %10s req/s   p99 %s %s\n' "$1" "$rps" "$p99" "$errors" >&2
    echo "$rps"
}

"$wasmhost" serve "$app" --port "$port_wasmhost" 2>/dev/null &
pids+=($!)
ours="$(measure wasmhost "$port_wasmhost")"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

"$wasmtime" serve -S cli --addr "127.0.0.1:$port_wasmtime" "$app" 2>/dev/null &
pids+=($!)
theirs="$(measure "wasmtime serve" "$port_wasmtime")"

awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "wasmhost / wasmtime serve = %.2fx\n", a / b }'
