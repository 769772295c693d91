"""A CherryPy app for the WSGI bridge's tests, served unmodified as CherryPy
documents a WSGI deployment (`script_name=None`: the mount prefix comes from
SCRIPT_NAME). Its dependency tree pulls in pydantic-core, which has only
native wheels and which a CherryPy app never imports: the bridge drops it."""

import cherrypy


class Root:
    @cherrypy.expose
    def index(self):
        return "Hello from CherryPy in a component!\n"

    @cherrypy.expose
    def redirect(self):
        # Relative: resolved against the request URL, SCRIPT_NAME included.
        raise cherrypy.HTTPRedirect("hello")

    @cherrypy.expose
    def hello(self):
        return "hello\n"

    @cherrypy.expose
    def form(self, name=""):
        return f"posted {name}\n"

    @cherrypy.expose
    def boom(self):
        raise RuntimeError("boom")


cherrypy.config.update({"environment": "embedded"})
app = cherrypy.Application(Root(), script_name=None)
