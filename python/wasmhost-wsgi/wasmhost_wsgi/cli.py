"""`wasmhost-wsgi build MODULE:CALLABLE -o app.wasm [-r requirements.txt]`"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTRY = '''\
# componentize-py bundles what is imported when it builds: codecs found by
# name at run time (the IDNA one, for Host names) are imported here.
import encodings.idna  # noqa: F401
import wasmhost_wsgi_bridge
from {module} import {callable} as application

IncomingHandler = wasmhost_wsgi_bridge.handler(application)
'''


def fail(message):
    print(f"wasmhost-wsgi: error: {message}", file=sys.stderr)
    sys.exit(1)


def vendor(requirements, into):
    """Installs the requirements' wheels into `into`. A component cannot load
    native extension modules: they are dropped where the package falls back
    to pure Python without them (MarkupSafe's speedups), else refused."""
    if not requirements.is_file():
        fail(f"{requirements}: no such file")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(into),
         "--only-binary", ":all:", "-r", str(requirements)],
        capture_output=True, text=True)
    if pip.returncode != 0:
        last = (pip.stderr.strip().splitlines() or ["(no output)"])[-1]
        fail(f"{requirements}: pip could not install it: {last}")
    native = {}
    for path in into.rglob("*"):
        if path.suffix in (".so", ".pyd"):
            native.setdefault(path.relative_to(into).parts[0], []).append(path)
    refused = []
    for package, files in sorted(native.items()):
        for file in files:
            file.unlink()
        name = package.removesuffix(".py").split(".")[0]
        probe = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(into)!r}); import {name}"],
            capture_output=True, text=True)
        if probe.returncode != 0:
            refused.append(name)
    if refused:
        verb = "needs" if len(refused) == 1 else "need"
        fail(f"{requirements}: {', '.join(refused)} {verb} native extension modules, which a "
             "component cannot load; use a pure-Python release or drop the dependency")


def build(args):
    module, _, callable_name = args.target.partition(":")
    callable_name = callable_name or "application"
    if not module.replace(".", "").replace("_", "").isalnum() or not callable_name.isidentifier():
        fail(f"`{args.target}` is not MODULE:CALLABLE, e.g. wsgi:application")
    source = Path(args.app_dir).resolve()
    if not (source / (module.replace(".", "/") + ".py")).is_file() and \
            not (source / module.replace(".", "/") / "__init__.py").is_file():
        fail(f"module `{module}` not found in {source}")
    wit = Path(args.wit).resolve() if args.wit else HERE / "wit"
    output = Path(args.output).resolve()
    with tempfile.TemporaryDirectory(prefix="wasmhost-wsgi-") as tmp:
        work = Path(tmp)
        (work / "wasmhost_wsgi_entry.py").write_text(
            ENTRY.format(module=module, callable=callable_name))
        shutil.copy(HERE / "bridge.py", work / "wasmhost_wsgi_bridge.py")
        paths = [work, source]
        if args.requirements:
            vendored = work / "vendor"
            vendor(Path(args.requirements).resolve(), vendored)
            paths.append(vendored)
        command = ["componentize-py", "-d", str(wit), "-w", "app", "componentize"]
        for path in paths:
            command += ["-p", str(path)]
        command += ["wasmhost_wsgi_entry", "-o", str(output)]
        built = subprocess.run(command, capture_output=True, text=True)
        if built.returncode != 0:
            fail(f"componentize-py failed:\n{built.stderr.strip() or built.stdout.strip()}")
    print(f"built {output} ({output.stat().st_size // 1024} KiB); serve it with: wasmhost serve {output}")


def main():
    parser = argparse.ArgumentParser(prog="wasmhost-wsgi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build a WSGI application into a component")
    build_parser.add_argument("target", help="MODULE:CALLABLE, e.g. wsgi:application")
    build_parser.add_argument("-o", "--output", default="app.wasm")
    build_parser.add_argument("-r", "--requirements", help="a requirements.txt to vendor")
    build_parser.add_argument("--app-dir", default=".", help="where MODULE is (default: here)")
    build_parser.add_argument("--wit", help="the WIT directory (default: the one shipped)")
    args = parser.parse_args()
    build(args)


if __name__ == "__main__":
    main()
