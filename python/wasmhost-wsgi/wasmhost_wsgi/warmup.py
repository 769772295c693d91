"""What the build does with the app once it is imported, so that what the app
needs later is in the component: componentize-py keeps only the modules
imported while it builds (`wasmhost_wsgi_warmup` in the component).

- Every module of the app's own package: a framework finds some by name
  (Django's `ROOT_URLCONF`, `INSTALLED_APPS`).
- For Django: every module its settings name (middleware, template
  backends and loaders, session engine, …), every module of each installed
  app, and a few requests through the app (a page, a 404, a POST without a
  CSRF token, a path without its slash) that import what Django imports on
  first use: template loaders, the error views, the session serializers.
  They run inside the build, which has no network, files or environment.

A module that does not import is skipped with one line of the build output.

componentize-py keeps no files at run time, only what the build left in
memory: a template or data file read on a request (Django's CSRF failure
page reads `csrf_403.html` each time) is not there. So the text files
beside the app's and its packages' code (templates, JSON, …, up to
`FILE_LIMIT` each and `FILES_LIMIT` in all) are read at build, and `open`
falls back to them for a path that is missing at run time.
"""

import builtins
import importlib
import importlib.machinery
import io
import os
import pkgutil
import sys

# What is kept of the files beside the code: text formats that code reads
# at run time; not translations (.mo, loaded at build for the default
# language) nor static assets, which a web server serves.
KEPT_SUFFIXES = {".html", ".htm", ".txt", ".json", ".xml", ".csv", ".yaml", ".yml", ".toml",
                 ".ini", ".cfg", ".j2", ".jinja", ".jinja2", ".mako", ".tmpl", ".tpl", ".sql",
                 ".pem"}
FILE_LIMIT = 256 * 1024
FILES_LIMIT = 16 * 1024 * 1024
# Path, contents.
EMBEDDED = {}


def skipped(name, error):
    print(f"wasmhost-wsgi: skipped {name}: {type(error).__name__}: {error}", file=sys.stderr)


def import_quietly(name):
    """Imports `name`; whether it did."""
    try:
        importlib.import_module(name)
        return True
    except BaseException:  # noqa: BLE001 - any failure means "not a module here"
        return False


def install_ssl_stand_in():
    """The guest's Python has no `_ssl` (no OpenSSL), so `import ssl` fails,
    and with it libraries that import it for names only (scramp, hence
    pg8000, takes `SSLSocket` for a type check) even when they never make
    a TLS connection. A stand-in `ssl` has the names; making a context
    says plainly that TLS is not there."""
    try:
        import ssl  # noqa: F401
        return
    except ImportError:
        pass
    import types

    module = types.ModuleType("ssl", "A stand-in: the component's Python has no TLS.")
    message = ("TLS is not available in the component's Python (it has no OpenSSL): connect "
               "without TLS (a database on a trusted network), or make HTTPS requests through "
               "wasi:http (urllib3, requests)")

    class SSLError(OSError):
        pass

    class SSLContext:
        """Made and configured as usual; it fails where TLS would start.
        So a client that only offers TLS (pg8000's default, like libpq's
        `sslmode=prefer`) goes on in the clear with a server that declines,
        and gets this error from one that accepts."""

        check_hostname = False
        verify_mode = 0

        def __init__(self, *args, **kwargs):
            pass

        def wrap_socket(self, *args, **kwargs):
            raise SSLError(message)

        wrap_bio = wrap_socket

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return self.wrap_socket

    def create_default_context(*args, **kwargs):
        return SSLContext()

    class SSLSocket:
        pass

    class SSLObject:
        pass

    for name, value in {
        "SSLError": SSLError, "SSLZeroReturnError": SSLError, "SSLWantReadError": SSLError,
        "SSLWantWriteError": SSLError, "SSLEOFError": SSLError,
        "SSLCertVerificationError": SSLError, "CertificateError": SSLError,
        "SSLContext": SSLContext, "create_default_context": create_default_context,
        "SSLSocket": SSLSocket, "SSLObject": SSLObject, "HAS_SNI": False,
        "CERT_NONE": 0, "CERT_OPTIONAL": 1, "CERT_REQUIRED": 2,
        "PROTOCOL_TLS_CLIENT": 16, "PROTOCOL_TLS_SERVER": 17, "PROTOCOL_TLS": 2,
        "OP_NO_SSLv2": 0, "OP_NO_SSLv3": 0, "OP_NO_COMPRESSION": 0,
        "OPENSSL_VERSION": "none", "OPENSSL_VERSION_INFO": (0, 0, 0, 0, 0),
    }.items():
        setattr(module, name, value)

    def other(name):
        # What else the standard library and libraries take from `ssl` at
        # import: more exception classes, and flag constants.
        if name.startswith("__"):
            raise AttributeError(name)
        if name.endswith("Error"):
            value = type(name, (SSLError,), {})
        elif name.isupper():
            value = 0
        else:
            value = type(name, (), {})
        setattr(module, name, value)
        return value

    module.__getattr__ = other
    sys.modules["ssl"] = module


def pre_import(modules, maybe_modules):
    """Imports `modules`, saying which fail, and `maybe_modules`, which may
    not exist, quietly."""
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as error:  # noqa: BLE001 - any failure is skipped
            skipped(name, error)
    for name in maybe_modules:
        import_quietly(name)


def package_modules(package):
    """Imports every module below the package `package`."""
    try:
        root = importlib.import_module(package)
    except BaseException as error:  # noqa: BLE001
        skipped(package, error)
        return
    paths = getattr(root, "__path__", None)
    if paths is None:
        return
    for module in pkgutil.walk_packages(paths, f"{package}.", onerror=lambda name: None):
        last = module.name.rsplit(".", 1)[-1]
        if last in ("tests", "test", "migrations", "management", "__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except BaseException as error:  # noqa: BLE001
            skipped(module.name, error)


def dotted_names(value):
    """The strings in a setting's value that may name a module or a
    module's attribute (`a.b.C`)."""
    if isinstance(value, str):
        parts = value.split(".")
        if len(parts) > 1 and all(part.isidentifier() for part in parts):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from dotted_names(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from dotted_names(item)


def request(application, method, path, body=b""):
    """Sends one request through the WSGI `application`, answer ignored."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    try:
        answer = application(environ, lambda status, headers, exc_info=None: None)
        for _ in answer:
            pass
        getattr(answer, "close", lambda: None)()
    except BaseException:  # noqa: BLE001 - a warm-up that fails still imported
        pass


def prepare_django(application):
    from django.apps import apps
    from django.conf import settings

    for name in sorted(dir(settings)):
        if name.isupper():
            for dotted in dotted_names(getattr(settings, name, None)):
                if not import_quietly(dotted):
                    import_quietly(dotted.rsplit(".", 1)[0])
    for config in apps.get_app_configs():
        package_modules(config.name)
    for module in ("django.template.loaders.filesystem", "django.template.loaders.app_directories",
                   "django.template.loaders.cached", "django.views.defaults", "django.views.csrf",
                   "django.conf.urls", "django.core.signing"):
        import_quietly(module)
    from django.core import checks

    try:
        checks.run_checks()
    except BaseException as error:  # noqa: BLE001
        skipped("django's checks", error)
    # Under the setting, a request refused for its host would not go far.
    allowed = settings.ALLOWED_HOSTS
    settings.ALLOWED_HOSTS = ["localhost"]
    try:
        for method, path in (("GET", "/"), ("GET", "/__wasmhost_warmup__/"),
                             ("GET", "/__wasmhost_warmup__"), ("POST", "/")):
            request(application, method, path)
    finally:
        settings.ALLOWED_HOSTS = allowed


def embed_files(code_paths):
    """Reads the text files under the build's first `code_paths` code paths
    (the app's and its vendored packages', which componentize-py mounts at
    /0, /1, …) into `EMBEDDED` and makes `open` fall back to them."""
    total = 0
    roots = [f"/{n}" for n in range(code_paths) if os.path.isdir(f"/{n}")]
    for root in roots:
        for directory, folders, files in os.walk(root):
            folders[:] = [f for f in folders
                          if f not in ("__pycache__", "locale", "static", "tests", "dist-info")
                          and not f.endswith(".dist-info")]
            for name in files:
                if os.path.splitext(name)[1].lower() not in KEPT_SUFFIXES:
                    continue
                path = os.path.join(directory, name)
                try:
                    size = os.path.getsize(path)
                    if size > FILE_LIMIT or total + size > FILES_LIMIT:
                        continue
                    with open(path, "rb") as file:
                        EMBEDDED[path] = file.read()
                    total += size
                except OSError:
                    continue
    if EMBEDDED:
        builtins.open = io.open = _open_embedded(io.open)


def _open_embedded(real_open):
    def open_embedded(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None,
                      closefd=True, opener=None):
        try:
            return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        except FileNotFoundError:
            path = os.fspath(file) if isinstance(file, (str, os.PathLike)) else None
            data = EMBEDDED.get(os.path.normpath(path)) if path else None
            if data is None or any(flag in mode for flag in "wax+"):
                raise
            if "b" in mode:
                return io.BytesIO(data)
            return io.TextIOWrapper(io.BytesIO(data), encoding=encoding or "utf-8",
                                    errors=errors, newline=newline)

    return open_embedded


def settings_source():
    """The source of Django's settings module, read at build, and its path."""
    module = sys.modules.get(os.environ.get("DJANGO_SETTINGS_MODULE", ""))
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return file.read(), path
    except OSError:
        return None


class RereadSettings:
    """The WSGI app, with Django's settings module run again on an
    instance's first request: the build ran it with the build's
    environment, and a value read from the environment (`SECRET_KEY =
    os.environ["DJANGO_SECRET_KEY"]`, `DEBUG`, `ALLOWED_HOSTS`, a database
    URL) must be the one the app is granted. What Django built from its
    settings at start-up (installed apps, the middleware chain, URL
    patterns) stays as the build made it."""

    def __init__(self, application, source, path):
        self.application = application
        self.code = compile(source, path, "exec")
        self.path = path
        self.fresh = True

    def __call__(self, environ, start_response):
        if self.fresh:
            self.fresh = False
            self.reread()
        return self.application(environ, start_response)

    def reread(self):
        from django.conf import settings

        values = {"__file__": self.path, "__name__": "wasmhost_wsgi_settings"}
        try:
            exec(self.code, values)  # noqa: S102 - the app's own settings module
        except Exception as error:  # noqa: BLE001
            print(f"wasmhost-wsgi: the settings module failed at run time, the build's values "
                  f"stay: {type(error).__name__}: {error}", file=sys.stderr)
            return
        for name, value in values.items():
            if name.isupper() and getattr(settings, name, None) != value:
                setattr(settings, name, value)


# Not imported with the rest of a vendored package: its tests, and modules
# meant to be run or loaded by a test runner.
NOT_IMPORTED = {"tests", "test", "testing", "conftest", "__main__", "pytest_plugin", "_pytest"}


class EmbeddedSources:
    """Imports, at run time, the vendored modules the build did not import
    (a library loads some by name: SQLAlchemy its dialects, from the
    database URL), from their source read at build: componentize-py keeps
    no files. Importing them all at build instead would run their side
    effects (CherryPy's plugins subscribe to its bus as they are imported)
    in every app."""

    def __init__(self, sources, distributions):
        # Module name: (path it had at build, is a package, source).
        self.sources = sources
        # Distribution name: its metadata files' texts, by file name
        # (`importlib.metadata.version("scramp")`, which scramp asks as it
        # is imported).
        self.distributions = distributions
        self.distribution = _distribution_class() if distributions else None

    def find_distributions(self, context=None):
        wanted = getattr(context, "name", None)
        normal = wanted.replace("-", "_").lower() if wanted else None
        for name, files in self.distributions.items():
            if normal is None or name == normal:
                yield self.distribution(files)

    def find_spec(self, name, path=None, target=None):
        entry = self.sources.get(name)
        if entry is None:
            return None
        origin, is_package, _ = entry
        spec = importlib.machinery.ModuleSpec(name, self, origin=origin, is_package=is_package)
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [os.path.dirname(origin)]
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        origin, _, source = self.sources[module.__name__]
        exec(compile(source, origin, "exec", dont_inherit=True), module.__dict__)  # noqa: S102


def _distribution_class():
    import importlib.metadata as metadata

    # What reading a distribution's metadata imports on first use.
    for name in ("_adapters", "_meta", "_text", "_functools", "_itertools", "_collections"):
        import_quietly(f"importlib.metadata.{name}")

    class EmbeddedDistribution(metadata.Distribution):
        def __init__(self, files):
            self.files_text = files

        def read_text(self, filename):
            return self.files_text.get(filename)

        def locate_file(self, path):
            return path

    return EmbeddedDistribution


DIST_FILES = ("METADATA", "entry_points.txt", "top_level.txt")


def embed_sources(root):
    """Keeps the source of every module vendored at `root` that is not
    imported yet (not their tests), for `EmbeddedSources`."""
    sources = {}
    for directory, folders, files in os.walk(root):
        relative = os.path.relpath(directory, root)
        parts = [] if relative == "." else relative.split(os.sep)
        folders[:] = [f for f in folders if f.isidentifier() and f not in NOT_IMPORTED
                      and os.path.isfile(os.path.join(directory, f, "__init__.py"))]
        for name in files:
            stem, suffix = os.path.splitext(name)
            if suffix != ".py" or not stem.isidentifier() or stem in NOT_IMPORTED:
                continue
            is_package = stem == "__init__"
            module = ".".join(parts if is_package else [*parts, stem])
            if not module or module in sys.modules:
                continue
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as file:
                    sources[module] = (path, is_package, file.read())
            except OSError:
                continue
    distributions = {}
    for folder in os.listdir(root):
        if not folder.endswith(".dist-info"):
            continue
        files = {}
        for name in DIST_FILES:
            try:
                with open(os.path.join(root, folder, name), encoding="utf-8") as file:
                    files[name] = file.read()
            except OSError:
                continue
        if "METADATA" in files:
            distribution = folder.removesuffix(".dist-info").rsplit("-", 1)[0]
            distributions[distribution.replace("-", "_").lower()] = files
    if sources or distributions:
        sys.meta_path.append(EmbeddedSources(sources, distributions))


def prepare(application, package, code_paths, vendored=None):
    """Imports what the app at `package` may need later and keeps the files
    beside its code; the app to serve (Django's re-reads its settings)."""
    embed_files(code_paths)
    if package:
        package_modules(package)
    if "django" in sys.modules:
        try:
            from django.conf import settings

            configured = settings.configured
        except BaseException:  # noqa: BLE001
            configured = False
        if configured:
            prepare_django(application)
            source = settings_source()
            if source:
                application = RereadSettings(application, *source)
    if vendored:
        embed_sources(vendored)
    return application


class FromSource:
    """The app of a dev build (`wasmhost-wsgi build --dev`): imported from
    the source granted at `source_at` when an instance serves its first
    request, so that an edit needs a new instance, not a new build. The
    vendored packages the build did not import are read from `deps_at`,
    where the build left them; a file beside their code that the build
    saw at `build_deps` is opened there too."""

    def __init__(self, module, name, source_at, deps_at, build_deps):
        self.module, self.name = module, name
        self.source_at, self.deps_at, self.build_deps = source_at, deps_at, build_deps
        self.application = None

    def __call__(self, environ, start_response):
        if self.application is None:
            self.application = self.load()
        return self.application(environ, start_response)

    def load(self):
        if not os.path.isdir(self.source_at):
            raise RuntimeError(
                f"this is a dev build (wasmhost-wsgi build --dev): it reads the app's source "
                f"from {self.source_at}, which is not granted; serve it with wasmhost dev, "
                f"whose [app.dev] grants it, or build the app without --dev")
        if self.source_at not in sys.path:
            # Read-only: the guest's Python would try to write bytecode there.
            sys.dont_write_bytecode = True
            sys.path[:0] = [self.source_at, self.deps_at]
            builtins.open = io.open = _open_moved(io.open, self.build_deps, self.deps_at)
        module = importlib.import_module(self.module)
        return getattr(module, self.name)


def _open_moved(real_open, before, after):
    """`open` that looks for a missing file under `before` at `after`."""
    prefix = before.rstrip("/") + "/"

    def open_moved(file, *args, **kwargs):
        try:
            return real_open(file, *args, **kwargs)
        except FileNotFoundError:
            path = os.fspath(file) if isinstance(file, (str, os.PathLike)) else None
            if not isinstance(path, str) or not path.startswith(prefix):
                raise
            return real_open(after + "/" + path[len(prefix):], *args, **kwargs)

    return open_moved
