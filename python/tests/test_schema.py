"""Relay's schema from Django migrations, and the real services on it (and the other way round)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

import support
from relay import schema
from relay_django.conf import relay_settings

# Everything a service or an application relies on, per database, in comparable form.
SHAPE = {
    "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity"
    " FROM information_schema.columns WHERE table_schema = 'relay' ORDER BY 1, 2",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'relay' ORDER BY 1",
    "constraints": "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
    " JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'relay' ORDER BY 1",
    "functions": "SELECT p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc), p.prosecdef,"
    " p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname = 'relay' ORDER BY 1, 2",
    "grants": "SELECT table_name, grantee, privilege_type FROM information_schema.role_table_grants"
    " WHERE table_schema = 'relay' ORDER BY 1, 2, 3",
}


def shape(database: str) -> dict[str, list[tuple[Any, ...]]]:
    with support.connect(database) as conn:
        return {what: conn.execute(sql).fetchall() for what, sql in SHAPE.items()}


def without_applied_on(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(version, name, checksum) for version, name, _, checksum in rows]


def test_django_migrations_leave_the_schema_and_history_the_services_create(db_name: str, services_migrated_db: str) -> None:
    for name, table in schema.HISTORY_TABLES.items():
        django_rows = support.history(db_name, table)
        assert [r[0] for r in django_rows] == schema.versions(name)
        assert without_applied_on(django_rows) == without_applied_on(support.history(services_migrated_db, table))
    assert shape(db_name) == shape(services_migrated_db)


def test_the_services_start_on_a_django_migrated_database_and_create_nothing(db_name: str, services: dict[str, Any]) -> None:
    procs = (services["poller"], services["consumer"])
    for addr in services["addrs"].values():
        support.eventually(
            60, f"{addr}/readyz", lambda a=addr: (support.http_get(a, "/readyz") or (0, ""))[0] == 200, watch=procs
        )
        assert support.http_get(addr, "/readyz?parts=schema") == (200, "schema: ok\n")
    for table, before in services["history_before"].items():
        assert support.history(db_name, table) == before, "a service re-applied a migration"
    for p in procs:
        # The services read the history Django's migrations wrote, found it current and applied
        # nothing (the history is unchanged above).
        assert "applied schema migration" not in p.text()
        assert " ERROR " not in p.text(), p.text()


def test_django_migrate_on_a_database_the_services_migrated(services_migrated_db: str) -> None:
    before = {t: support.history(services_migrated_db, t) for t in schema.HISTORY_TABLES.values()}
    migrate = support.manage("migrate", "--no-input", database=services_migrated_db, name="migrate")
    assert migrate.proc.wait(120) == 0, migrate.text()
    for table, rows in before.items():
        assert support.history(services_migrated_db, table) == rows, "the scripts re-applied a migration"
    with support.connect(services_migrated_db) as conn:
        applied = conn.execute("SELECT name FROM django_migrations WHERE app = 'relay_django' ORDER BY name").fetchall()
    assert [name for (name,) in applied] == migration_names()
    # Going back (to re-run the installer after adding a schema to SCHEMAS) drops nothing.
    shape_before = shape(services_migrated_db)
    back = support.manage("migrate", "relay_django", "zero", "--no-input", database=services_migrated_db, name="migrate-zero")
    assert back.proc.wait(120) == 0, back.text()
    assert shape(services_migrated_db) == shape_before
    for table, rows in before.items():
        assert support.history(services_migrated_db, table) == rows


def test_the_scripts_are_idempotent_and_refuse_a_history_they_disagree_with() -> None:
    name = support.create_database()
    try:
        with support.connect(name) as conn:
            for s in schema.SCHEMAS:
                schema.install(conn.cursor(), s)
            first = {t: support.history(name, t) for t in schema.HISTORY_TABLES.values()}
            for s in schema.SCHEMAS:
                schema.install(conn.cursor(), s)
            assert {t: support.history(name, t) for t in schema.HISTORY_TABLES.values()} == first
            conn.execute("UPDATE relay_outbox_schema_history SET checksum = '1' WHERE version = 2")
            conn.execute("DELETE FROM relay_inbox_schema_history WHERE version = 1")
            with pytest.raises(psycopg.Error, match="relay_outbox_schema_history holds version 2 as"):
                schema.install(conn.cursor(), "outbox")
            with pytest.raises(psycopg.Error, match="relay_inbox_schema_history lacks V1__inbox, but holds later versions"):
                schema.install(conn.cursor(), "inbox")
    finally:
        support.drop_database(name)


def migration_names() -> list[str]:
    import relay_django.migrations as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def test_the_newest_django_migration_brings_every_shipped_relay_migration() -> None:
    newest = importlib.import_module(f"relay_django.migrations.{migration_names()[-1]}")
    assert newest.RELAY_VERSIONS == {s: schema.latest_version(s) for s in schema.SCHEMAS}, (
        "the shipped scripts carry a Relay migration no Django migration declares: add a migration to "
        "relay_django/migrations that runs installer() with the new versions"
    )


@pytest.mark.django_db
def test_the_models_need_no_new_django_migration() -> None:
    call_command("makemigrations", "relay_django", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_installing_on_another_database_vendor_is_refused_with_a_clear_reason() -> None:
    from relay_django.schema import installer

    class Editor:
        class connection:
            vendor = "sqlite"
            alias = "other"

    with pytest.raises(ImproperlyConfigured, match="needs PostgreSQL; database 'other' is sqlite"):
        installer({"outbox": 1})(None, Editor())
    assert connection.vendor == "postgresql"


def test_bad_relay_settings_are_reported_all_at_once() -> None:
    bad = {"SCHEMAS": ["outbox", "ledger"], "WORKERS": 0, "POLL_INTERVAL": 5, "DATABASE": "nope", "INBOXX": "x",
           "BACKOFF_INITIAL_MS": 10, "BACKOFF_MAX_MS": 5, "MIGRATION_LOCK_TIMEOUT": "soon"}
    with override_settings(RELAY=bad), pytest.raises(ImproperlyConfigured) as caught:
        relay_settings()
    text = str(caught.value)
    for fragment in ("['INBOXX']: unknown key", "RELAY['SCHEMAS']", "RELAY['DATABASE']", "RELAY['WORKERS']",
                     "RELAY['POLL_INTERVAL']", "RELAY['BACKOFF_MAX_MS']", "RELAY['MIGRATION_LOCK_TIMEOUT']"):
        assert fragment in text, text
    with override_settings(RELAY={"SCHEMAS": ["inbox"], "INBOX": "ledger"}):
        conf = relay_settings()
    assert (conf.schemas, conf.worker_options().inbox, conf.worker_options().poll_interval) == (("inbox",), "ledger", 1.0)
