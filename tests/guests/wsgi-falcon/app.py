"""A Falcon app for the WSGI bridge's tests, served unmodified."""

import falcon


class Index:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "Hello from Falcon in a component!\n"


class Redirect:
    def on_get(self, req, resp):
        # Falcon builds the absolute URL from SCRIPT_NAME: under the mount.
        raise falcon.HTTPFound(req.prefix + "/")


class Form:
    def on_post(self, req, resp):
        form = req.get_media()
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = f"posted {form.get('name', '')}\n"


class Boom:
    def on_get(self, req, resp):
        raise RuntimeError("boom")


app = falcon.App()
app.add_route("/", Index())
app.add_route("/redirect", Redirect())
app.add_route("/form", Form())
app.add_route("/boom", Boom())
