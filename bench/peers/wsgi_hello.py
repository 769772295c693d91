"""The Python peer: the hello app as a WSGI callable on cheroot (CherryPy's
server) with 30 threads, the same body and content type as the components.
Usage: wsgi_hello.py PORT"""

import sys

from cheroot import wsgi

BODY = b"Hello from a Python component!\n"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]


if __name__ == "__main__":
    server = wsgi.Server(("127.0.0.1", int(sys.argv[1])), app, numthreads=30)
    try:
        server.start()
    except KeyboardInterrupt:
        server.stop()
