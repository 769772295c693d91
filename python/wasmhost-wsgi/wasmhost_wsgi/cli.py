"""`wasmhost-wsgi build MODULE:CALLABLE -o app.wasm [-r requirements.txt]`"""

import argparse
import ast
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
import os

# WASI has no users. Libraries that ask (platformdirs, which setuptools'
# pkg_resources imports, so Pyramid) get "nobody" instead of an ImportError.
for _name in ("getuid", "geteuid", "getgid", "getegid"):
    if not hasattr(os, _name):
        setattr(os, _name, lambda: 65534)

import wasmhost_wsgi_bridge
from {module} import {callable} as application

# componentize-py keeps only the modules imported while it builds, so the
# modules the app may import later (inside a function, on a first request)
# are imported now; one that fails here is skipped with a line.
import importlib as _importlib
import sys as _sys

for _module in {pre_imports!r}:
    try:
        _importlib.import_module(_module)
    except BaseException as _error:
        print(f"wasmhost-wsgi: skipped {{_module}}: {{type(_error).__name__}}: {{_error}}",
              file=_sys.stderr)
# `from a import b` names `a.b`, which may be a module or not.
for _module in {maybe_modules!r}:
    try:
        _importlib.import_module(_module)
    except ModuleNotFoundError as _error:
        if _error.name != _module:
            print(f"wasmhost-wsgi: skipped {{_module}}: {{_error}}", file=_sys.stderr)
    except BaseException as _error:
        print(f"wasmhost-wsgi: skipped {{_module}}: {{type(_error).__name__}}: {{_error}}",
              file=_sys.stderr)

import wasmhost_wsgi_warmup

application = wasmhost_wsgi_warmup.prepare(application, {package!r}, {code_paths!r})

IncomingHandler = wasmhost_wsgi_bridge.handler(application)
'''

# Standard-library modules WSGI apps commonly import where they use them
# (the guest's CPython has their C parts built in: zlib, select, _sqlite3).
COMMON_STDLIB = [
    "base64", "binascii", "collections", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "email.utils", "enum", "functools", "hashlib", "hmac", "html", "http",
    "http.cookies", "io", "itertools", "json", "logging", "math", "mimetypes", "operator",
    "pathlib", "random", "re", "secrets", "select", "socket", "sqlite3", "string", "struct",
    "textwrap", "threading", "time", "traceback", "typing", "urllib.parse", "uuid", "warnings",
    "weakref", "zlib",
]


def imports_in(files):
    """The absolute modules the Python `files` import, anywhere in them: at
    the top, inside functions, under `if`s, as PyInstaller's module graph
    finds them; and, apart, `a.b` for each `from a import b`, which may be
    a module or a name in `a`."""
    modules, maybe = set(), set()
    for file in files:
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
                maybe.update(f"{node.module}.{alias.name}" for alias in node.names
                             if alias.name != "*")
    return modules, maybe - modules


def app_files(source, module):
    """The app's own source: its module (a package's whole directory) and
    the other modules beside it, which it may import."""
    top = source / module.split(".")[0]
    files = set(source.glob("*.py"))
    if top.is_dir():
        files.update(top.rglob("*.py"))
    return sorted(files)


def fail(message):
    print(f"wasmhost-wsgi: error: {message}", file=sys.stderr)
    sys.exit(1)


# The CPython inside the component (componentize-py 0.25.1 embeds 3.14):
# dependencies resolve for it, not for the Python running this script, so
# that environment markers (`legacy-cgi; python_version >= "3.13"`) and
# Requires-Python follow the guest. pip evaluates markers for the Python it
# runs on whatever `--python-version` says; uv resolves for the target.
GUEST_PYTHON = "3.14"
# Pure-Python wheels, and CPython 3.14 ones for Linux, whose pure-Python
# fallbacks are kept once their native modules are gone.
GUEST_PLATFORM = "x86_64-manylinux_2_17"


def warn(message):
    print(f"wasmhost-wsgi: warning: {message}", file=sys.stderr)


def vendor(requirements, into):
    """Installs the requirements' wheels, resolved for the guest's Python,
    into `into`. A component cannot load native extension modules: they are
    dropped, and so is a package that cannot be imported without them (a
    tool deep in the dependency tree that the app may never import). The
    names of those are returned: if the app imports one, the build says so.
    """
    if not requirements.is_file():
        fail(f"{requirements}: no such file")
    lines = (line.split("#")[0].strip() for line in requirements.read_text().splitlines())
    if not any(lines):
        return []
    uv = [sys.executable, "-m", "uv"]
    if subprocess.run([*uv, "--version"], capture_output=True).returncode != 0:
        fail(f"{requirements}: resolving it for the component's Python {GUEST_PYTHON} needs uv; "
             f"install it with: {Path(sys.executable).name} -m pip install uv")
    installed = subprocess.run(
        [*uv, "pip", "install", "--quiet", "--target", str(into), "--python-version", GUEST_PYTHON,
         "--python-platform", GUEST_PLATFORM, "--only-binary", ":all:", "-r", str(requirements)],
        capture_output=True, text=True)
    if installed.returncode != 0:
        said = [line for line in installed.stderr.strip().splitlines() if line.strip()]
        fail(f"{requirements}: no wheels for Python {GUEST_PYTHON}: "
             f"{' '.join(line.strip() for line in said[-3:]) or '(no output)'}")
    native = {}
    for path in into.rglob("*"):
        if path.suffix in (".so", ".pyd"):
            native.setdefault(path.relative_to(into).parts[0], []).append(path)
    dropped = []
    for package, files in sorted(native.items()):
        for file in files:
            file.unlink()
        name = package.removesuffix(".py").split(".")[0]
        probe = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(into)!r}); import {name}"],
            capture_output=True, text=True)
        if probe.returncode != 0:
            shutil.rmtree(into / package, ignore_errors=True)
            dropped.append(name)
            warn(f"{requirements}: dropped {name}: it needs native extension modules, which a "
                 "component cannot load; the app fails to build if it imports it")
    return dropped


def needed_native(error, dropped):
    """The dropped package a failed build could not import, if that is why
    it failed."""
    for name in dropped:
        if f"No module named '{name}'" in error or f"No module named '{name}." in error:
            return name
    return None


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
        found, maybe = imports_in(app_files(source, module))
        pre_imports = sorted(set(COMMON_STDLIB) | found | set(args.include or []))
        top = module.split(".")[0]
        package = top if (source / top / "__init__.py").is_file() else None
        shutil.copy(HERE / "bridge.py", work / "wasmhost_wsgi_bridge.py")
        shutil.copy(HERE / "warmup.py", work / "wasmhost_wsgi_warmup.py")
        paths = [work, source]
        dropped = []
        if args.requirements:
            vendored = work / "vendor"
            dropped = vendor(Path(args.requirements).resolve(), vendored)
            paths.append(vendored)
        (work / "wasmhost_wsgi_entry.py").write_text(ENTRY.format(
            module=module, callable=callable_name, pre_imports=pre_imports,
            maybe_modules=sorted(maybe), package=package, code_paths=len(paths)))
        command = ["componentize-py", "-d", str(wit), "-w", "app", "componentize"]
        for path in paths:
            command += ["-p", str(path)]
        command += ["wasmhost_wsgi_entry", "-o", str(output)]
        built = subprocess.run(command, capture_output=True, text=True)
        if built.returncode != 0:
            said = built.stderr.strip() or built.stdout.strip()
            native = needed_native(said, dropped)
            if native:
                fail(f"the app imports {native}, which needs native extension modules that a "
                     "component cannot load; use a pure-Python release or drop the dependency")
            fail(f"componentize-py failed:\n{said}")
    for line in (built.stdout + built.stderr).splitlines():
        if line.startswith("wasmhost-wsgi: skipped "):
            print(line, file=sys.stderr)
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
    build_parser.add_argument("--include", action="append", metavar="MODULE",
                              help="a module to import at build as well (one the app finds by "
                                   "name at run time); repeatable")
    args = parser.parse_args()
    build(args)


if __name__ == "__main__":
    main()
