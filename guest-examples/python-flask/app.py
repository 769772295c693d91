"""A small Flask app, written as for any WSGI server; wasmhost-wsgi makes
`app` (Flask's WSGI callable) a component."""

from flask import Flask, abort, jsonify, render_template_string, request

app = Flask(__name__)

PAGE = """<!doctype html>
<title>{{ title }}</title>
<ul>{% for item in items %}<li>{{ item }}</li>{% endfor %}</ul>
"""


@app.get("/")
def index():
    return "Hello from Flask in a component!\n"


@app.get("/hello/<name>")
def hello(name):
    return jsonify(hello=name)


@app.post("/form")
def form():
    return jsonify(name=request.form.get("name"), tags=request.form.getlist("tag"))


@app.get("/page")
def page():
    return render_template_string(PAGE, title="A <page>", items=["one", "two & three"])


@app.get("/missing")
def missing():
    abort(404)


@app.get("/boom")
def boom():
    raise RuntimeError("the app failed on purpose")
