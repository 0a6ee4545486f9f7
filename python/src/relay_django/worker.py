"""The inbox worker under Django: each thread's Django connection, ``atomic()`` transactions.

Handlers use the ORM as usual: it runs on the worker thread's connection, inside the worker's
transaction, under a savepoint, so their effect commits together with ``relay.done`` or not at
all. ``manage.py relay_worker`` runs :func:`run`.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import Any, Optional

from django.db import connections, transaction
from django.utils.module_loading import autodiscover_modules

from relay import worker
from relay.errors import ConfigurationError
from relay.handlers import registry
from relay.options import WorkerOptions


class DjangoSession:
    """A :class:`relay.worker.Session` on this thread's connection of database ``alias``."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    @property
    def connection(self) -> Any:
        return connections[self.alias]

    def transaction(self) -> AbstractContextManager[Any]:
        return transaction.atomic(using=self.alias)

    def query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with connections[self.alias].cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def reset(self) -> None:
        connections[self.alias].close()

    def close(self) -> None:
        connections[self.alias].close()


def listener(alias: str) -> Any:
    """A new psycopg 3 connection to database ``alias`` in autocommit mode, for ``LISTEN``."""
    wrapper = connections.create_connection(alias)
    wrapper.ensure_connection()
    raw = wrapper.connection
    if not callable(getattr(raw, "notifies", None)):
        raise ConfigurationError([
            f"database {alias!r}: relay_worker needs Django's psycopg 3 backend (pip install 'psycopg[binary]')"
        ])
    raw.autocommit = True
    return raw


def load_handlers(modules: tuple[str, ...]) -> None:
    """Imports every installed app's ``relay_handlers`` module and the extra ``modules``."""
    autodiscover_modules("relay_handlers")
    for module in modules:
        importlib.import_module(module)


def run(options: WorkerOptions, alias: str, stop: Optional[Any] = None) -> None:
    """Runs the workers on database ``alias`` until SIGTERM/SIGINT (or ``stop`` is set)."""
    wrapper = connections[alias]
    if wrapper.vendor != "postgresql" or getattr(wrapper, "Database", None).__name__ != "psycopg":
        raise ConfigurationError([
            f"database {alias!r}: relay_worker needs PostgreSQL through Django's psycopg 3 backend "
            "(pip install 'psycopg[binary]')"
        ])
    worker.run(options, registry, lambda: DjangoSession(alias), lambda: listener(alias), stop)
