"""A Flask app for the WSGI bridge's framework checks, served unmodified."""

from flask import Flask, redirect, request, url_for

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask in a component!\n", {"Content-Type": "text/plain"}


@app.get("/redirect")
def elsewhere():
    # url_for builds the path from SCRIPT_NAME: under the mount.
    return redirect(url_for("index"))


@app.post("/form")
def form():
    return f"posted {request.form.get('name', '')}\n", {"Content-Type": "text/plain"}


@app.get("/boom")
def boom():
    raise RuntimeError("boom")
