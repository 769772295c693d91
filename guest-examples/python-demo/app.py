"""The demo app, in Python: the same five routes as every guest-examples/*-demo.

`GET /` greets, `GET /hello/NAME` answers {"hello": NAME}, `POST /echo`
streams the request body back with its content type, `GET /env/NAME` shows
an environment variable the app was granted, anything else is 404.
componentize-py turns this module into a component exporting
wasi:http/incoming-handler; the class name must match the exported interface.
"""

import json
import os
from urllib.parse import unquote

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import streams
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Get,
    Method_Post,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

TEXT = b"text/plain; charset=utf-8"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = (request.path_with_query() or "/").split("?", 1)[0]
        method = request.method()
        get = isinstance(method, Method_Get)
        if path == "/echo":
            if isinstance(method, Method_Post):
                echo(request, response_out)
            else:
                reply(response_out, 405, TEXT, b"use POST\n")
        elif get and path == "/":
            reply(response_out, 200, TEXT, b"Hello from Python!\n")
        elif get and path.startswith("/hello/"):
            name = unquote(path[len("/hello/"):])
            reply(response_out, 200, b"application/json", json.dumps({"hello": name}).encode() + b"\n")
        elif get and path.startswith("/env/"):
            value = os.environ.get(unquote(path[len("/env/"):]))
            if value is None:
                reply(response_out, 404, TEXT, b"no such variable granted\n")
            else:
                reply(response_out, 200, TEXT, value.encode() + b"\n")
        else:
            reply(response_out, 404, TEXT, b"not found\n")


def start(response_out: ResponseOutparam, status: int, content_type: bytes) -> OutgoingBody:
    """Sends the head and hands back the body to write."""
    response = OutgoingResponse(Fields.from_list([("content-type", content_type)]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    return body


def reply(response_out: ResponseOutparam, status: int, content_type: bytes, data: bytes) -> None:
    body = start(response_out, status, content_type)
    with body.write() as stream:
        stream.blocking_write_and_flush(data)
    OutgoingBody.finish(body, None)


def echo(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    """Copies the request body to the response as it arrives, never whole."""
    types = request.headers().get("content-type")
    content_type = types[0] if types else b"application/octet-stream"
    incoming = request.consume()
    body = start(response_out, 200, content_type)
    complete = False
    with incoming.stream() as input_stream, body.write() as output:
        while True:
            try:
                output.blocking_splice(input_stream, 65536)
            except Err as error:
                complete = isinstance(error.value, streams.StreamError_Closed)
                break
        output.blocking_flush()
    # Children before parents: the streams are closed, then the bodies, then the request.
    IncomingBody.finish(incoming).__exit__(None, None, None)
    if complete:
        OutgoingBody.finish(body, None)
    else:
        # An unfinished body tells the client the echo was cut short.
        body.__exit__(None, None, None)
    request.__exit__(None, None, None)
