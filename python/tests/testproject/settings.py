"""Settings of the small Django project the Relay package's tests run (real PostgreSQL).

The database comes from RELAY_TEST_PG (postgres://user@host:port, as for the Rust suite). Its
name is fixed per test session in RELAY_PY_TEST_DB, so processes the tests start (manage.py
relay_worker, manage.py migrate) reach the same database as the tests; pytest-django creates it
under that very name (TEST NAME) and drops it afterwards.
"""

import os
import uuid
from urllib.parse import urlsplit

_pg = urlsplit(os.environ.get("RELAY_TEST_PG", "postgres://postgres@127.0.0.1:5432"))
_name = os.environ.setdefault("RELAY_PY_TEST_DB", f"relay_it_py_{uuid.uuid4().hex[:12]}")

SECRET_KEY = "relay-tests-only"
DEBUG = False
USE_TZ = True
ROOT_URLCONF = "testproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "relay_django",
    "orders",
    "ledger",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _name,
        "USER": _pg.username or "postgres",
        "PASSWORD": _pg.password or "",
        "HOST": _pg.hostname or "127.0.0.1",
        "PORT": str(_pg.port or 5432),
        "TEST": {"NAME": _name},
    }
}

RELAY = {
    "SCHEMAS": ["outbox", "inbox"],
    "POLL_INTERVAL": 0.2,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"relay": {"handlers": ["stderr"], "level": "INFO"}},
}
