"""A Pyramid app for the WSGI bridge's tests, served unmodified: its
dependencies resolve for the guest's Python 3.14 (WebOb needs legacy-cgi
there, by an environment marker), and pkg_resources asks for a user id that
WASI does not have."""

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound
from pyramid.response import Response


def index(request):
    return Response("Hello from Pyramid in a component!\n")


def redirect(request):
    # Pyramid builds the URL from SCRIPT_NAME: under the mount.
    return HTTPFound(location=request.route_url("index"))


def form(request):
    return Response(f"posted {request.POST.get('name', '')}\n")


def boom(request):
    raise RuntimeError("boom")


with Configurator() as config:
    config.add_route("index", "/")
    config.add_view(index, route_name="index")
    config.add_route("redirect", "/redirect")
    config.add_view(redirect, route_name="redirect")
    config.add_route("form", "/form")
    config.add_view(form, route_name="form", request_method="POST")
    config.add_route("boom", "/boom")
    config.add_view(boom, route_name="boom")
    app = config.make_wsgi_app()
