"""A plain WSGI app that imports standard-library modules where it uses
them, inside its handler, and one by a name it is given at run time: the
bridge must have them all in the component (componentize-py keeps only the
modules imported while it builds)."""

import importlib


def answer(path):
    if path == "/json":
        import json

        return json.dumps({"ok": True})
    if path == "/hashlib":
        import hashlib

        return hashlib.sha256(b"wasmhost").hexdigest()
    if path == "/decimal":
        from decimal import Decimal

        return str(Decimal("0.1") + Decimal("0.2"))
    if path == "/sqlite3":
        import sqlite3

        db = sqlite3.connect(":memory:")
        db.execute("create table t (x)")
        db.execute("insert into t values (41)")
        return str(db.execute("select x + 1 from t").fetchone()[0])
    if path == "/uuid":
        import uuid

        return str(uuid.UUID(int=1))
    if path.startswith("/dynamic/"):
        return importlib.import_module(path.removeprefix("/dynamic/")).__name__
    return None


def application(environ, start_response):
    try:
        body = answer(environ["PATH_INFO"])
    except ImportError as error:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [f"{type(error).__name__}: {error}\n".encode()]
    if body is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [(body + "\n").encode()]
