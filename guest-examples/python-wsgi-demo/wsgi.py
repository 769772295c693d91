"""The demo app as a plain WSGI application: the same five routes as every
guest-examples/*-demo, served unchanged by cheroot or gunicorn, or turned into
a component by wasmhost-wsgi (`wasmhost-wsgi build wsgi:application`).

`GET /` greets, `GET /hello/NAME` answers {"hello": NAME}, `POST /echo`
streams the request body back with its content type, `GET /env/NAME` shows
an environment variable the app was granted, anything else is 404.
"""

import json
import os

TEXT = [("Content-Type", "text/plain; charset=utf-8")]


def application(environ, start_response):
    # PEP 3333 gives PATH_INFO percent-decoded, as bytes in a latin-1 str.
    path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace")
    method = environ["REQUEST_METHOD"]
    if path == "/echo":
        if method != "POST":
            start_response("405 Method Not Allowed", TEXT + [("Allow", "POST")])
            return [b"use POST\n"]
        content_type = environ.get("CONTENT_TYPE") or "application/octet-stream"
        start_response("200 OK", [("Content-Type", content_type)])
        return echo(environ["wsgi.input"])
    if method == "GET" and path == "/":
        start_response("200 OK", TEXT)
        return [b"Hello from Python (WSGI)!\n"]
    if method == "GET" and path.startswith("/hello/"):
        body = json.dumps({"hello": path[len("/hello/"):]}).encode() + b"\n"
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if method == "GET" and path.startswith("/env/"):
        value = os.environ.get(path[len("/env/"):])
        if value is not None:
            start_response("200 OK", TEXT)
            return [value.encode() + b"\n"]
        start_response("404 Not Found", TEXT)
        return [b"no such variable granted\n"]
    start_response("404 Not Found", TEXT)
    return [b"not found\n"]


def echo(stream):
    """Yields the request body in pieces as they arrive: never read whole."""
    while chunk := stream.read(65536):
        yield chunk
