"""wasmhost-wsgi: a WSGI application (PEP 3333) as a wasi:http component.

`wasmhost-wsgi build wsgi:application -o app.wasm` packages the callable
with `bridge.py`, which serves it through `wasi:http/incoming-handler`, into
one component with componentize-py; `wasmhost serve app.wasm` serves it.
"""
