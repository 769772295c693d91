"""A small Django project in the usual layout, served unmodified through
the WSGI bridge: sessions in signed cookies, CSRF, a template, a form,
Django's own 404/403/500 pages and APPEND_SLASH. Its static files are
collected into `staticfiles/` for nginx (`wasmhost nginx --static-root`)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Granted at run time (`--env DJANGO_SECRET_KEY=…`); the build has none.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "the build's key")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "polls",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"
DATABASES = {}
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
USE_TZ = True
