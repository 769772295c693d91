"""Serves one WSGI application (PEP 3333) through wasi:http/incoming-handler.

This module runs inside the component: `wasmhost-wsgi build` bundles it with
the application, and the component's entry module exports
`IncomingHandler = handler(application)`.

Per request: the environ from the request's head (the mount prefix wasmhost
strips arrives in X-Forwarded-Prefix and becomes SCRIPT_NAME), `wsgi.input`
reading the request body as the application asks for it, and the response
streamed as the application yields it. Resources are released children
first (input stream, body, request; output stream, then the finished body),
so the instance can serve the next request in reuse mode.
"""

import sys
import traceback
import weakref
from urllib.parse import unquote_to_bytes

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import streams, types

# `blocking-write-and-flush` takes at most 4096 bytes a call.
WRITE_CHUNK = 4096
READ_CHUNK = 64 * 1024

METHODS = {
    types.Method_Get: "GET",
    types.Method_Head: "HEAD",
    types.Method_Post: "POST",
    types.Method_Put: "PUT",
    types.Method_Delete: "DELETE",
    types.Method_Connect: "CONNECT",
    types.Method_Options: "OPTIONS",
    types.Method_Trace: "TRACE",
    types.Method_Patch: "PATCH",
}


def handler(application):
    """The `IncomingHandler` class that serves `application`. Called last
    when the component is built, after the application is imported."""
    ResourceFinalizers.install()

    class IncomingHandler(exports.IncomingHandler):
        def handle(self, request, response_out):
            if ResourceFinalizers.installed:
                ResourceFinalizers.restore()
            Exchange(application, request, response_out).run()

    return IncomingHandler


class _Finalizer(weakref.ref):
    """What componentize-py's runtime and bindings use of `weakref.finalize`:
    `detach()`, and `func(*args)` (the handle's drop) once the resource
    object is collected without being released."""

    __slots__ = ("func", "args")

    def detach(self):
        resource = self()
        if resource is not None and _LIVE.pop(id(self), None) is not None:
            return (resource, self.func, self.args, {})
        return None


# Holds each finalizer until it fires or is detached, as `weakref.finalize`'s
# registry does: a callback whose weak reference is collected with its
# object (a reference cycle) would never run, and the handle would leak.
_LIVE = {}


def _fire(finalizer):
    if _LIVE.pop(id(finalizer), None) is not None:
        finalizer.func(*finalizer.args)


def _finalize(resource, func, *args):
    finalizer = _Finalizer(resource, _fire)
    finalizer.func = func
    finalizer.args = args
    _LIVE[id(finalizer)] = finalizer
    return finalizer


class ResourceFinalizers:
    """componentize-py gives every resource handle that reaches Python a
    `weakref.finalize` (and a constructed one two), and detaches it when the
    handle is released: a GET makes about nine, and `finalize`'s registry
    bookkeeping is interpreted Python, a fifth of the guest's time per
    request in a profile. The runtime takes `weakref.finalize` once, when
    the component is built, just after the entry module is imported, and the
    bindings look it up per call: both get `_finalize`, which keeps the same
    guarantee for a fraction of the work. The application's own
    `weakref.finalize` is the standard one again before its first request."""

    installed = False
    _standard = weakref.finalize

    @classmethod
    def install(cls):
        shim = type(sys)("weakref")
        shim.__dict__.update(weakref.__dict__)
        shim.finalize = _finalize
        for name, module in list(sys.modules.items()):
            if name.startswith("wit_world.") and getattr(module, "weakref", None) is weakref:
                module.weakref = shim
        weakref.finalize = _finalize
        cls.installed = True

    @classmethod
    def restore(cls):
        weakref.finalize = cls._standard
        cls.installed = False


class Input:
    """`wsgi.input`: the request body, read from the host as asked for. The
    body is taken from the request only when the app first reads it: most
    requests (a GET) never do, and each host call costs the guest time."""

    def __init__(self, request):
        self._request = request
        self._body = None
        self._stream = None
        self._buffer = b""
        self._done = False

    def close(self):
        """Releases the stream, then the body: children before their parent."""
        if self._stream is not None:
            self._stream.__exit__(None, None, None)
        if self._body is not None:
            self._body.__exit__(None, None, None)

    def _fill(self):
        if self._done:
            return False
        if self._stream is None:
            self._body = self._request.consume()
            self._stream = self._body.stream()
        try:
            self._buffer += self._stream.blocking_read(READ_CHUNK)
        except Err as error:
            if not isinstance(error.value, streams.StreamError_Closed):
                raise OSError("the request body could not be read") from None
            self._done = True
            return False
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            while self._fill():
                pass
            data, self._buffer = self._buffer, b""
            return data
        while len(self._buffer) < size and self._fill():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size=-1):
        while b"\n" not in self._buffer and (size < 0 or len(self._buffer) < size) and self._fill():
            pass
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def readlines(self, hint=-1):
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        while line := self.readline():
            yield line


class Exchange:
    """One request and its response."""

    def __init__(self, application, request, response_out):
        self.application = application
        self.request = request
        self.response_out = response_out
        self.status = None
        self.headers = None
        self.body = None
        self.stream = None

    def run(self):
        wsgi_input = Input(self.request)
        try:
            self.serve(self.environ(wsgi_input))
        finally:
            wsgi_input.close()
            self.request.__exit__(None, None, None)

    def serve(self, environ):
        try:
            result = self.application(environ, self.start_response)
            try:
                for chunk in result:
                    if chunk:
                        self.write(chunk)
                if self.body is None:
                    if self.status is None:
                        raise RuntimeError("the application returned without calling start_response")
                    self.send_head()
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception as error:
            print(f"wasmhost-wsgi: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            traceback.print_exc(file=sys.stderr)
            if self.body is None:
                self.status, self.headers = "500 Internal Server Error", [
                    ("Content-Type", "text/plain; charset=utf-8")]
                self.send_head()
                self.write(b"500 Internal Server Error: the application failed\n")
            else:
                # The head is out: dropping the body unfinished makes the host
                # cut the response, so the client sees it is incomplete.
                self.stream.__exit__(None, None, None)
                self.body.__exit__(None, None, None)
                return
        self.stream.__exit__(None, None, None)
        types.OutgoingBody.finish(self.body, None)

    def environ(self, wsgi_input):
        with self.request.headers() as fields:
            entries = fields.entries()
        headers = {}
        for name, value in entries:
            value = value.decode("latin-1")
            if name in headers:
                # HTTP/2 sends each cookie as a field of its own; they are
                # one header again joined with "; " (RFC 9113 §8.2.3).
                value = headers[name] + ("; " if name == "cookie" else ",") + value
            headers[name] = value
        method = self.request.method()
        path, _, query = (self.request.path_with_query() or "/").partition("?")
        scheme = self.request.scheme()
        url_scheme = "https" if isinstance(scheme, types.Scheme_Https) else "http"
        # The request's authority is its Host header when it has one (HTTP/1.1);
        # reading the header spares a host call.
        authority = headers.get("host") or self.request.authority()
        host, _, port = (authority or "").rpartition(":")
        if not host or not port.isdigit():
            host, port = authority or "localhost", "443" if url_scheme == "https" else "80"
        environ = {
            "REQUEST_METHOD": METHODS.get(type(method)) or getattr(method, "value", "GET"),
            "SCRIPT_NAME": headers.get("x-forwarded-prefix", "").rstrip("/"),
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": host.strip("[]"),
            "SERVER_PORT": port,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": headers.get("x-real-ip", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url_scheme,
            "wsgi.input": wsgi_input,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
            else:
                environ["HTTP_" + key] = value
        # wasi:http carries the Host as the request's authority, not among
        # its fields; frameworks read HTTP_HOST (CherryPy refuses an HTTP/1.1
        # request without it, Django checks it against ALLOWED_HOSTS).
        if authority:
            environ.setdefault("HTTP_HOST", authority)
        return environ

    def start_response(self, status, response_headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.body is not None:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        code, _, _ = str(status).partition(" ")
        if not (isinstance(status, str) and len(code) == 3 and code.isdigit() and 100 <= int(code) <= 999):
            raise ValueError(f"bad status {status!r}: give e.g. '200 OK'")
        self.status, self.headers = status, list(response_headers)
        return self.write

    def send_head(self):
        fields = types.Fields.from_list(
            [(name.lower(), str(value).strip(" \t").encode("latin-1")) for name, value in self.headers])
        response = types.OutgoingResponse(fields)
        code = int(self.status[:3])
        if code != 200:  # a new response's status; one host call fewer
            response.set_status_code(code)
        self.body = response.body()
        types.ResponseOutparam.set(self.response_out, Ok(response))
        self.stream = self.body.write()

    def write(self, data):
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"the response body must be bytes, not {type(data).__name__}")
        if self.body is None:
            if self.status is None:
                raise AssertionError("write() before start_response")
            self.send_head()
        if len(data) <= WRITE_CHUNK:
            self.stream.blocking_write_and_flush(bytes(data))
            return
        view = memoryview(data)
        for start in range(0, len(view), WRITE_CHUNK):
            self.stream.blocking_write_and_flush(bytes(view[start:start + WRITE_CHUNK]))
