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


def prepare(application, package, code_paths):
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
                return RereadSettings(application, *source)
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
