"""Installing Relay's schema from a Django migration.

Each Django migration of this app that changes Relay's schema declares the Relay migration
versions it brings (``RELAY_VERSIONS``) and runs :func:`installer` with them. The installer runs
the shipped install-or-upgrade scripts (:mod:`relay.schema`), which apply only what the
services' history table lacks and record it as the services do; so it works on an empty
database and on one the services already migrated, and the services accept what it leaves.

A test checks that the newest migration of this app declares the newest versions the shipped
scripts carry, so a package with a new Relay migration cannot ship without a Django migration
that applies it to existing databases.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction

from relay import schema as scripts

from .conf import relay_settings

log = logging.getLogger("relay.schema")

#: Attempts when a schema change waits longer than MIGRATION_LOCK_TIMEOUT for a table lock.
ATTEMPTS = 5


def installer(versions: dict[str, int]) -> Callable[[Any, Any], None]:
    """The ``RunPython`` function installing Relay's schemas up to at least ``versions``.

    Installs only the schemas named in ``RELAY['SCHEMAS']``. Raises ``ImproperlyConfigured``
    on a database that is not PostgreSQL (route ``relay_django`` elsewhere with a router), and
    the database error when the history disagrees with the scripts or a lock never came free.
    """

    def install(apps: Any, schema_editor: Any) -> None:
        connection = schema_editor.connection
        if connection.vendor != "postgresql":
            raise ImproperlyConfigured(
                f"Relay's schema needs PostgreSQL; database {connection.alias!r} is {connection.vendor}. "
                "Keep relay_django's migrations off it with a database router (allow_migrate)."
            )
        conf = relay_settings()
        for name in conf.schemas:
            shipped = scripts.latest_version(name)
            if shipped < versions.get(name, 0):
                raise ImproperlyConfigured(
                    f"the packaged {name} script reaches V{shipped}, but this migration needs "
                    f"V{versions[name]}: the relay package is damaged; reinstall it"
                )
            _install_patiently(connection, name, conf.migration_lock_timeout)

    return install


def _install_patiently(connection: Any, name: str, lock_timeout: str) -> None:
    """Runs one script under a savepoint with ``lock_timeout``; retried when a lock wait gave up,
    so an open application transaction is held up for at most the timeout per attempt."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cur:
                cur.execute("SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)", [lock_timeout])
                before = cur.fetchone()[0]
                scripts.install(cur, name)
                cur.execute("SELECT set_config('lock_timeout', %s, true)", [before])
            log.info("Relay %s schema is at V%d", name, scripts.latest_version(name))
            return
        except DatabaseError as e:
            if _sqlstate(e) != "55P03" or attempt == ATTEMPTS:
                raise
            pause = random.uniform(1.0, 2.0) * attempt
            log.warning(
                "Relay %s schema: a table lock was not free within %s (attempt %d of %d); retrying in %.1f s",
                name, lock_timeout, attempt, ATTEMPTS, pause,
            )
            time.sleep(pause)


def _sqlstate(error: BaseException) -> str | None:
    cause = error.__cause__
    return getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
