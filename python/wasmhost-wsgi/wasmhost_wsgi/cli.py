"""`wasmhost-wsgi build MODULE:CALLABLE -o app.wasm [-r requirements.txt]`"""

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# What every component's entry module starts with.
SHIMS = '''\
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
import wasmhost_wsgi_warmup

wasmhost_wsgi_warmup.install_ssl_stand_in()
'''

# componentize-py keeps only the modules imported while it builds, so the
# modules the app may import later (inside a function, on a first request)
# are imported at build; one that fails is skipped with a line. `from a
# import b` names `a.b`, which may be a module or not; and the standard
# library modules the vendored packages name may not all be in the guest's
# Python (`cgi`, `msvcrt`): both kinds are skipped without a word.
PRE_IMPORTS = '''
wasmhost_wsgi_warmup.pre_import({pre_imports!r}, {maybe_modules!r})
'''

# The app, imported as it is built (before the pre-imports: Django's
# modules need its settings, which the app's module names).
ENTRY = SHIMS + '''
from {module} import {callable} as application
''' + PRE_IMPORTS + '''
application = wasmhost_wsgi_warmup.prepare(application, {package!r}, {code_paths!r}, {vendored!r})

IncomingHandler = wasmhost_wsgi_bridge.handler(application)
'''

# `--dev`: the app's source is not in the component; an instance imports it
# from the directory granted at `source_at` when it serves its first request.
DEV_ENTRY = SHIMS + PRE_IMPORTS + '''
application = wasmhost_wsgi_warmup.FromSource(
    {module!r}, {callable!r}, {source_at!r}, {deps_at!r}, {build_deps!r})

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


def check_syntax(files):
    """Fails on the first file Python cannot parse (this Python's grammar,
    which may lag the guest's 3.14)."""
    for file in files:
        try:
            compile(file.read_bytes(), str(file), "exec", dont_inherit=True)
        except SyntaxError as error:
            fail(f"{file}:{error.lineno}: SyntaxError: {error.msg}\n"
                 f"    {(error.text or '').rstrip()}")
        except (OSError, ValueError):
            continue


def own_tops(source):
    """The top-level modules and packages of the app's directory."""
    tops = {path.stem for path in source.glob("*.py")}
    tops.update(path.parent.name for path in source.glob("*/__init__.py"))
    return tops


def stdlib_imports_of(vendored):
    """The standard-library modules the vendored packages import anywhere in
    their code (not their tests): what they may import lazily, at run time,
    which a component has only if the build imported it."""
    files = [path for path in vendored.rglob("*.py")
             if not {"tests", "test", "testing"} & set(path.relative_to(vendored).parts[:-1])]
    found, _ = imports_in(files)
    stdlib = set(sys.stdlib_module_names)
    return {name for name in found if name.split(".")[0] in stdlib and not name.startswith("_")}


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
    requirements = Path(args.requirements).resolve() if args.requirements else None
    files = app_files(source, module)
    found, maybe = imports_in(files)
    dev = None
    if args.dev:
        # What the guest would fail to import on every request is said now,
        # by the build, which `wasmhost dev` shows as the app's error page.
        check_syntax(files)
        dev = DevBuild(output, args.source_at)
        # The app's own modules are read from its staged source at run time.
        tops = own_tops(source)
        found = {name for name in found if name.split(".")[0] not in tops}
        maybe = {name for name in maybe if name.split(".")[0] not in tops}
        key = dev.key(requirements, found, args.include)
        if dev.unchanged(key):
            dev.stage_source(source, key)
            print(f"{output}: the dependencies and imports are as they were; the edited source "
                  f"is staged at {dev.files / dev.src_link(key)}, which new instances read")
            return
    with tempfile.TemporaryDirectory(prefix="wasmhost-wsgi-") as tmp:
        work = Path(tmp)
        pre_imports = sorted(set(COMMON_STDLIB) | found | set(args.include or []))
        top = module.split(".")[0]
        package = top if (source / top / "__init__.py").is_file() else None
        shutil.copy(HERE / "bridge.py", work / "wasmhost_wsgi_bridge.py")
        shutil.copy(HERE / "warmup.py", work / "wasmhost_wsgi_warmup.py")
        paths = [work] if dev else [work, source]
        dropped = []
        vendored = None
        if requirements:
            vendored = dev.new_deps() if dev else work / "vendor"
            dropped = vendor(requirements, vendored)
            if vendored.is_dir():
                paths.append(vendored)
                maybe |= stdlib_imports_of(vendored) - set(pre_imports)
            else:
                # Nothing to vendor: no code path (the one after the last
                # is componentize-py's own).
                vendored = None
        if dev:
            # componentize-py mounts the code paths at /0, /1, … while it
            # builds: the packages' modules imported then name /1 as theirs.
            text = DEV_ENTRY.format(
                module=module, callable=callable_name, pre_imports=pre_imports,
                maybe_modules=sorted(maybe),
                source_at=dev.at(dev.src_link(key)),
                deps_at=dev.at(vendored.name if vendored else "no-deps"),
                build_deps=f"/{len(paths) - 1}" if vendored else None)
        else:
            text = ENTRY.format(
                module=module, callable=callable_name, pre_imports=pre_imports,
                maybe_modules=sorted(maybe), package=package, code_paths=len(paths),
                vendored=f"/{len(paths) - 1}" if vendored else None)
        (work / "wasmhost_wsgi_entry.py").write_text(text)
        # Written beside and renamed over the output: a server watching it
        # never reads half a component.
        written = output.with_name(f".{output.name}.building")
        command = ["componentize-py", "-d", str(wit), "-w", "app", "componentize"]
        for path in paths:
            command += ["-p", str(path)]
        command += ["wasmhost_wsgi_entry", "-o", str(written)]
        built = subprocess.run(command, capture_output=True, text=True)
        if built.returncode != 0:
            written.unlink(missing_ok=True)
            if dev and vendored:
                shutil.rmtree(vendored, ignore_errors=True)
            said = built.stderr.strip() or built.stdout.strip()
            native = needed_native(said, dropped)
            if native:
                fail(f"the app imports {native}, which needs native extension modules that a "
                     "component cannot load; use a pure-Python release or drop the dependency")
            fail(f"componentize-py failed:\n{said}")
        if dev:
            dev.stage_source(source, key)
            dev.record(key, vendored)
        written.replace(output)
    for line in (built.stdout + built.stderr).splitlines():
        if line.startswith("wasmhost-wsgi: skipped "):
            print(line, file=sys.stderr)
    size = output.stat().st_size // 1024
    if dev:
        print(f"built {output} ({size} KiB), a dev build: it reads the app's source from "
              f"{dev.files} (staged there by each build), which wasmhost dev grants at "
              f"{args.source_at} ([app.dev] dirs)")
        return
    print(f"built {output} ({size} KiB); serve it with: wasmhost serve {output}")


class DevBuild:
    """A dev build's files, beside its component (`.wasmhost/dev/` for
    `.wasmhost/dev.wasm`) and granted to the guest at `source_at`: the
    app's source as of the last good build, and the vendored packages,
    whose modules the build did not import are read from there. The source
    is a link named for what the component was built from (`src-KEY`),
    pointed at a new copy in one rename by each good build, so an instance
    never sees an edit that did not build (a syntax error), nor one made for
    a component not yet serving (an import the serving one lacks). While
    what it was built from stays the same, an edit needs only a new copy.
    """

    def __init__(self, output, source_at):
        if not source_at.startswith("/"):
            fail(f"--source-at {source_at}: give the absolute guest path, e.g. /app")
        self.output = output
        self.source_at = source_at.rstrip("/") or "/"
        self.files = output.parent / output.stem
        self.stamp = self.files / "built-from"
        self.files.mkdir(parents=True, exist_ok=True)

    def at(self, name):
        """Where the guest sees `name` of the files."""
        return f"{self.source_at.rstrip('/')}/{name}"

    @staticmethod
    def src_link(key):
        return f"src-{key[:16]}"

    def key(self, requirements, found, include):
        """What the dev component holds: the packages, the modules
        imported at build, and this tool's own code."""
        import hashlib

        digest = hashlib.sha256()
        for part in (requirements.read_bytes() if requirements else b"",
                     "\n".join(sorted(found) + sorted(include or [])).encode(),
                     self.source_at.encode(),
                     *(path.read_bytes() for path in sorted(HERE.glob("*.py")))):
            digest.update(len(part).to_bytes(8, "little") + part)
        return digest.hexdigest()

    def unchanged(self, key):
        try:
            stamp = self.stamp.read_text().split()[0]
        except (OSError, IndexError):
            return False
        return self.output.is_file() and stamp == key

    def record(self, key, deps):
        """Says what the component about to be written holds, and removes
        what only the component before the one it replaces used."""
        try:
            before = self.stamp.read_text().split()
        except OSError:
            before = []
        kept = {self.src_link(key), deps.name if deps else None}
        if len(before) == 2:
            kept.update((self.src_link(before[0]), before[1]))
        self.stamp.write_text(f"{key} {deps.name if deps else '-'}")
        for link in self.files.glob("src-*"):
            if link.is_symlink() and link.name not in kept:
                link.unlink()
        for deps in self.files.glob("deps.*"):
            if deps.name not in kept:
                shutil.rmtree(deps, ignore_errors=True)
        self.tidy()

    def new_deps(self):
        return Path(tempfile.mkdtemp(prefix="deps.", dir=self.files))

    def stage_source(self, source, key):
        """Copies the app's directory (not its hidden directories, caches
        or components) and points the key's link at the copy."""
        copy = Path(tempfile.mkdtemp(prefix="copy.", dir=self.files))
        patterns = shutil.ignore_patterns(".*", "__pycache__", "node_modules", "*.wasm")

        def skipped(directory, names):
            # Not the dev build's own files, wherever -o put them.
            return patterns(directory, names) | {
                name for name in names if Path(directory, name) == self.files}

        shutil.copytree(source, copy, ignore=skipped, dirs_exist_ok=True)
        link = self.files / self.src_link(key)
        staged = self.files / f".{link.name}.new"
        staged.unlink(missing_ok=True)
        staged.symlink_to(copy.name)
        staged.replace(link)
        self.tidy()

    def tidy(self):
        """Removes the copies of the source no link points at, but for the
        newest few (an instance may still be reading one whose link moved
        on)."""
        linked = {link.readlink().name for link in self.files.glob("src-*") if link.is_symlink()}
        copies = sorted(self.files.glob("copy.*"), key=lambda path: path.stat().st_mtime)
        for copy in copies[:-3]:
            if copy.name not in linked:
                shutil.rmtree(copy, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(prog="wasmhost-wsgi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build a WSGI application into a component")
    build_parser.add_argument("target", help="MODULE:CALLABLE, e.g. wsgi:application")
    build_parser.add_argument("-o", "--output", default="app.wasm")
    build_parser.add_argument("-r", "--requirements", help="a requirements.txt to vendor")
    build_parser.add_argument("--app-dir", default=".", help="where MODULE is (default: here)")
    build_parser.add_argument("--wit", help="the WIT directory (default: the one shipped)")
    build_parser.add_argument("--dev", action="store_true",
                              help="for wasmhost dev: leave the app's own source out of the "
                                   "component, to be read at --source-at when an instance "
                                   "starts, so that an edit needs no new build")
    build_parser.add_argument("--source-at", default="/app", metavar="GUEST_DIR",
                              help="with --dev: where the dev build's files (the directory "
                                   "named as -o without .wasm) are granted (default: /app)")
    build_parser.add_argument("--include", action="append", metavar="MODULE",
                              help="a module to import at build as well (one the app finds by "
                                   "name at run time); repeatable")
    args = parser.parse_args()
    build(args)


if __name__ == "__main__":
    main()
