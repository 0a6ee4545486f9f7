"""Fixtures: the real services on the Django-migrated test database, and a database the services
migrated themselves. Both need KAFKA_BROKERS and the binaries in target/debug (`make test`)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from django.conf import settings

import support
from relay import schema


@pytest.fixture(scope="session")
def db_name(django_db_setup: Any) -> str:
    """The test database (created and migrated by pytest-django, through relay_django's migrations)."""
    return str(settings.DATABASES["default"]["NAME"])


@pytest.fixture(scope="session")
def services(db_name: str) -> Iterator[dict[str, Any]]:
    """outbox-poller and inbox-consumer (inbox "e2e") running on the Django-migrated database."""
    topic = support.unique("py-e2e")
    support.create_topic(topic)
    addrs = {"poller": support.free_addr(), "consumer": support.free_addr()}
    history = {t: support.history(db_name, t) for t in schema.HISTORY_TABLES.values()}
    poller = support.poller(db_name, topic, RELAY_HTTP_ADDR=addrs["poller"])
    consumer = support.consumer(db_name, "e2e", topic, RELAY_HTTP_ADDR=addrs["consumer"])
    yield {"topic": topic, "poller": poller, "consumer": consumer, "addrs": addrs, "history_before": history}
    assert poller.terminate() == 0, poller.text()
    assert consumer.terminate() == 0, consumer.text()


def wait_for_history(database: str, *procs: support.Process) -> None:
    """Waits until the services recorded every migration this package ships."""
    for name, table in schema.HISTORY_TABLES.items():
        latest = schema.latest_version(name)

        def reached() -> bool:
            try:
                return any(row[0] >= latest for row in support.history(database, table))
            except Exception:  # the table does not exist yet
                return False

        support.eventually(60, f"{table} at V{latest}", reached, watch=procs)


@pytest.fixture(scope="session")
def services_migrated_db() -> Iterator[str]:
    """A database whose schemas the services created themselves (then stopped)."""
    name = support.create_database()
    topic = support.unique("py-svc")
    support.create_topic(topic)
    poller = support.poller(name, topic)
    consumer = support.consumer(name, "svc", topic)
    try:
        wait_for_history(name, poller, consumer)
    finally:
        poller.terminate()
        consumer.terminate()
    yield name
    support.drop_database(name)
