"""A Bottle app for the WSGI bridge's tests: a second framework, served
unmodified (`app` is Bottle's WSGI callable)."""

import bottle

app = bottle.Bottle()


@app.get("/")
def index():
    return "Hello from Bottle in a component!\n"


@app.get("/hello/<name>")
def hello(name):
    return {"hello": name}


@app.post("/upload")
def upload():
    data = bottle.request.body.read()
    return {"bytes": len(data), "type": bottle.request.content_type}


@app.get("/redirect")
def redirect():
    # Relative: resolved against the request URL, which includes SCRIPT_NAME.
    bottle.redirect("hello/redirected")
