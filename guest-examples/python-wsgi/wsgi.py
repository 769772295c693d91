"""The classic minimal WSGI app, unchanged from what cheroot or gunicorn
would serve: wasmhost-wsgi turns `application` into a component."""

import json


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Hello from a WSGI app in a component!\n"]
    if path == "/environ":
        keys = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
                "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR",
                "HTTP_X_TEST", "wsgi.url_scheme")
        body = json.dumps({key: environ.get(key) for key in keys}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/echo":
        # Read in pieces, as a streaming app would; answer through write().
        write = start_response("200 OK", [("Content-Type", environ.get("CONTENT_TYPE", "application/octet-stream"))])
        while chunk := environ["wsgi.input"].read(8192):
            write(chunk)
        return []
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"line {i}\n".encode() for i in range(1000))
    if path == "/str-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str is not a WSGI body"]
    if path == "/bad-status":
        start_response("OK", [])
        return [b"never sent"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
