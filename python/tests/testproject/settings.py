"""Settings of the small Django project the Relay package's tests run (real PostgreSQL).

The database comes from RELAY_TEST_PG (postgres://user@host:port, as for the Rust suite). Its
name is fixed per test session in RELAY_PY_TEST_DB, so processes the tests start (manage.py
relay_worker, manage.py migrate) reach the same database as the tests; pytest-django creates it
under that very name (TEST NAME) and drops it afterwards.
"""

import os
import uuid
from urllib.parse import parse_qs, unquote, urlsplit


def connection_settings(url: str) -> dict[str, str]:
    """USER, PASSWORD, HOST and PORT of Django's DATABASES entry from a libpq connection URL.

    User and password are percent-decoded (a PGPASSWORD with ``@``, ``:``, ``/`` or ``%`` is
    encoded in the URL). The host keeps its case and may be a percent-encoded Unix socket
    directory (``postgres://user@%2Fvar%2Frun%2Fpostgresql:5432``), a bracketed IPv6 address, or
    libpq's ``?host=/socket/dir`` query parameter, which wins over the authority.
    """
    parts = urlsplit(url)
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host = hostport[1 : hostport.index("]")]
    else:
        host = hostport.rpartition(":")[0] if ":" in hostport else hostport
    host = parse_qs(parts.query).get("host", [unquote(host)])[0]
    return {
        "USER": unquote(parts.username or "") or "postgres",
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host or "127.0.0.1",
        "PORT": str(parts.port or 5432),
    }


_pg = connection_settings(os.environ.get("RELAY_TEST_PG", "postgres://postgres@127.0.0.1:5432"))
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
        **_pg,
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
