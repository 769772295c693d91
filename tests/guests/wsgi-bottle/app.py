"""A Bottle app for the WSGI bridge's tests: a second framework, served
unmodified (`app` is Bottle's WSGI callable)."""

import weakref

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


@app.get("/cookies")
def cookies():
    return {
        "cookie": bottle.request.get_header("Cookie"),
        "cookies": dict(bottle.request.cookies),
        "x-many": bottle.request.get_header("X-Many"),
    }


@app.get("/weakref")
def own_weakref():
    # The bridge gives componentize-py's bindings a lighter finalizer while
    # the component is built; the app's requests see the standard one.
    class Thing:
        pass

    seen = []
    thing = Thing()
    finalizer = weakref.finalize(thing, seen.append, "collected")
    alive = finalizer.alive
    del thing
    return {"module": weakref.finalize.__module__, "alive": alive, "seen": seen}


@app.post("/form")
def form():
    bottle.response.content_type = "text/plain"
    return f"posted {bottle.request.forms.get('name', '')}\n"


@app.get("/boom")
def boom():
    raise RuntimeError("boom")
