"""A WSGI app from the repository on cheroot (CherryPy's server) with 30
threads: the same file the component is built from.
Usage: wsgi_app.py PORT DIR MODULE:CALLABLE"""

import importlib
import sys

from cheroot import wsgi

if __name__ == "__main__":
    port, directory, target = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    sys.path.insert(0, directory)
    module, _, name = target.partition(":")
    app = getattr(importlib.import_module(module), name)
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=30)
    try:
        server.start()
    except KeyboardInterrupt:
        server.stop()
