"""What the bench scripts share: where things are, the environment servers
run in, building wasmhost and the fault guest, the peer `wasmtime serve`,
starting a server and waiting until it answers, stopping it, and its RSS.
Each script imports it from its own folder."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("WASMHOST_BENCH_CACHE", Path.home() / ".cache/wasmhost/bench"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
WASMTIME_VERSION = "48.0.8"
# Servers run as a user runs them: without backtraces or extra logging.
ENV = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LOG")}


def logger(name):
    """A function that prints `name: message` on stderr."""

    def log(message):
        print(f"{name}: {message}", file=sys.stderr, flush=True)

    return log


def build_wasmhost(*more_packages):
    """Builds the release binary (and `more_packages` of the workspace);
    returns the binary's path."""
    packages = [arg for package in ("wasmhost", *more_packages) for arg in ("-p", package)]
    subprocess.run(["cargo", "build", "--release", *packages], cwd=ROOT, check=True)
    return TARGET / "release/wasmhost"


def build_fault_guest():
    """tests/guests' fault guest (hello, streams, faults on request)."""
    guests = CACHE / "soak-guests"
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip2", "-p", "fault",
                    "--target-dir", guests], cwd=ROOT / "tests/guests", check=True)
    return guests / "wasm32-wasip2/release/fault.wasm"


def wasmtime_cli(log):
    """The peer: `wasmtime` of wasmtime-cli WASMTIME_VERSION, installed
    once into the cache (about 10-15 minutes)."""
    wasmtime = CACHE / "wasmtime-cli/bin/wasmtime"
    if not wasmtime.exists():
        log(f"installing wasmtime-cli {WASMTIME_VERSION} (about 10 minutes, once)")
        subprocess.run(["cargo", "install", "wasmtime-cli", "--version", WASMTIME_VERSION,
                        "--locked", "--root", CACHE / "wasmtime-cli"], check=True)
    return wasmtime


def start(argv, url, seconds=60, stderr=subprocess.DEVNULL):
    """Starts `argv` and polls `url` until it answers (within `seconds`);
    returns the process and the seconds that took."""
    started = time.monotonic()
    process = subprocess.Popen([str(a) for a in argv], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=stderr)
    deadline = started + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{argv[0]} exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                reply.read()
            return process, time.monotonic() - started
        except OSError:
            time.sleep(0.01)  # polling for the first answer, bounded by the deadline
    process.kill()
    raise SystemExit(f"{argv[0]} did not answer {url} within {seconds} s")


def stop(process):
    """SIGTERM, then SIGKILL after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_mib(pid):
    """The process's resident memory, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
