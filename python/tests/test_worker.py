"""The worker protocol on real inbox rows: done, retried, parked, no handler, SIGTERM, psycopg CLI."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import threading
import uuid
from typing import Any, Iterator

import pytest

import support
from ledger.models import Entry
from relay.options import WorkerOptions
from relay_django import worker
from relay_django.models import InboxMessage

pytestmark = pytest.mark.django_db(transaction=True)


def payment(amount: int, fail: bool = False) -> bytes:
    return json.dumps({"amount_cents": amount, "fail": fail}).encode()


@pytest.fixture
def running(db_name: str) -> Iterator[Any]:
    """Starts the Django worker in this process on a given inbox; stops it at the end."""
    started: list[tuple[threading.Thread, threading.Event]] = []
    errors: list[BaseException] = []
    worker.load_handlers(())

    def start(inbox: str, **options: Any) -> None:
        stop = threading.Event()
        opts = WorkerOptions(inbox=inbox, poll_interval=0.05, **options)

        def target() -> None:
            try:
                worker.run(opts, "default", stop)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=target)
        t.start()
        started.append((t, stop))

    yield start
    for t, stop in started:
        stop.set()
        t.join(10)
        assert not t.is_alive()
    assert errors == []


def state(inbox: str, message_id: uuid.UUID) -> InboxMessage:
    return InboxMessage.objects.get(inbox=inbox, message_id=message_id)


def test_a_failing_handler_is_retried_then_parked_and_other_keys_flow(db_name: str, running: Any) -> None:
    inbox = "retrying"
    bad = support.insert_inbox(db_name, inbox, "acct-bad", payment(100, fail=True), sequence=1)
    after_bad = support.insert_inbox(db_name, inbox, "acct-bad", payment(200), sequence=2)
    good = [support.insert_inbox(db_name, inbox, f"acct-{i}", payment(i), sequence=10 + i) for i in range(5)]
    with support.connect(db_name) as conn:
        conn.execute("SELECT relay.enable_processing(%s, 3, 1, 1)", [inbox])
    running(inbox, max_attempts=3, backoff_initial_ms=1, backoff_max_ms=1)

    support.eventually(30, "the failing message parked", lambda: state(inbox, bad).parked_at)
    support.eventually(30, "the other keys processed", lambda: all(state(inbox, g).processed_at for g in good))
    parked = state(inbox, bad)
    assert parked.attempts == 3
    assert parked.park_reason == "ledger.relay_handlers.Declined: account acct-bad declined 100"
    assert parked.processed_at is None
    # Each attempt wrote its Entry and then raised: every one was rolled back with the savepoint.
    assert Entry.objects.filter(message_id=bad).count() == 0
    # The parked message's key waits: the later message of that key is not acted on.
    assert state(inbox, after_bad).processed_at is None
    assert Entry.objects.filter(message_id=after_bad).count() == 0
    assert sorted(Entry.objects.filter(message_id__in=good).values_list("amount_cents", flat=True)) == [0, 1, 2, 3, 4]
    assert all(state(inbox, g).attempts == 0 for g in good)


def test_a_message_without_a_handler_fails_with_the_reason_and_parks(db_name: str, running: Any) -> None:
    inbox = "retrying"
    unknown = support.insert_inbox(db_name, inbox, "refunds-1", payment(5), msg_type="refund.created", topic="refunds")
    known = support.insert_inbox(db_name, inbox, "refunds-2", payment(6), topic="refunds")
    with support.connect(db_name) as conn:
        conn.execute("SELECT relay.enable_processing(%s, 2, 1, 1)", [inbox])
    running(inbox, max_attempts=2, backoff_initial_ms=1, backoff_max_ms=1)

    support.eventually(30, "the unhandled message parked", lambda: state(inbox, unknown).parked_at)
    support.eventually(30, "the handled one processed", lambda: state(inbox, known).processed_at)
    message = state(inbox, unknown)
    assert message.processed_at is None
    assert message.attempts == 2
    assert message.park_reason == "no handler registered for inbox 'retrying', topic 'refunds', msg_type 'refund.created'"


#: Rows no message can come from (put in past the consumer): the column to spoil, its value, and
#: what the recorded reason names.
UNDECODABLE = [
    ("headers", '[1, 2]', "column headers: not a JSON object of strings: [1, 2]"),
    ("headers", '{"x": 1}', 'column headers: not a JSON object of strings: {"x": 1}'),
    ("headers", '"text"', 'column headers: not a JSON object of strings: "text"'),
    ("created_at", "infinity", "column created_at: Infinity seconds since 1970 is no datetime"),
    ("received_at", "20000-01-01 00:00:00+00", "column received_at:"),
]


def insert_undecodable(database: str, inbox: str) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    """For each of :data:`UNDECODABLE`: a spoiled message and a healthy later one of its key."""
    rows = []
    for n, (column, value, reason) in enumerate(UNDECODABLE):
        bad = support.insert_inbox(database, inbox, f"undecodable-{n}", payment(n), sequence=100 + n)
        later = support.insert_inbox(database, inbox, f"undecodable-{n}", payment(n), sequence=200 + n)
        cast = "jsonb" if column == "headers" else "timestamptz"
        with support.connect(database) as conn:
            conn.execute(f"UPDATE relay.inbox SET {column} = %s::{cast} WHERE message_id = %s", [value, bad])
        rows.append((bad, later, reason))
    return rows


def failure(database: str, inbox: str, message_id: uuid.UUID) -> tuple[Any, ...]:
    """(attempts, last_error, park_reason, parked, processed) without reading the spoiled columns."""
    with support.connect(database) as conn:
        row = conn.execute(
            "SELECT attempts, last_error, park_reason, parked_at IS NOT NULL, processed_at IS NOT NULL"
            " FROM relay.inbox WHERE inbox = %s AND message_id = %s",
            [inbox, message_id],
        ).fetchone()
    assert row is not None
    return tuple(row)


def all_parked(database: str, inbox: str, rows: list[tuple[uuid.UUID, uuid.UUID, str]]) -> bool:
    return all(failure(database, inbox, bad)[3] for bad, _, _ in rows)


def assert_parked_as_undecodable(
    database: str, inbox: str, rows: list[tuple[uuid.UUID, uuid.UUID, str]], attempts: int
) -> None:
    for bad, later, reason in rows:
        tries, last_error, park_reason, parked, processed = failure(database, inbox, bad)
        assert park_reason is not None and park_reason.startswith(
            "the message cannot be decoded: ValueError: " + reason
        ), park_reason
        assert (tries, last_error, parked, processed) == (attempts, park_reason, True, False)
        waiting = state(inbox, later)
        assert (waiting.processed_at, waiting.attempts) == (None, 0), "the key waits behind its parked message"


def test_undecodable_rows_are_parked_with_the_reason_while_other_keys_flow(db_name: str, running: Any) -> None:
    inbox = "retrying"
    spoiled = insert_undecodable(db_name, inbox)
    good = [support.insert_inbox(db_name, inbox, f"acct-{i}", payment(i), sequence=10 + i) for i in range(5)]
    with support.connect(db_name) as conn:
        conn.execute("SELECT relay.enable_processing(%s, 3, 1, 1)", [inbox])
    running(inbox, max_attempts=3, backoff_initial_ms=1, backoff_max_ms=1, batch_size=4)

    support.eventually(30, "every undecodable row parked", lambda: all_parked(db_name, inbox, spoiled))
    support.eventually(30, "the other keys processed", lambda: all(state(inbox, g).processed_at for g in good))
    assert_parked_as_undecodable(db_name, inbox, spoiled, 3)
    assert sorted(Entry.objects.filter(message_id__in=good).values_list("amount_cents", flat=True)) == [0, 1, 2, 3, 4]
    assert Entry.objects.exclude(message_id__in=good).count() == 0


def test_the_psycopg_session_records_undecodable_rows_too(db_name: str) -> None:
    from relay import Registry
    from relay.worker import PsycopgSession, process_batch

    inbox = "plain-undecodable"
    spoiled = insert_undecodable(db_name, inbox)
    good = support.insert_inbox(db_name, inbox, "fine", payment(7), sequence=1)
    with support.connect(db_name) as conn:
        conn.execute("SELECT relay.enable_processing(%s, 2, 1, 1)", [inbox])
    handled: list[uuid.UUID] = []
    registry = Registry()
    registry.handler(inbox)(lambda m: handled.append(m.message_id))
    session = PsycopgSession(lambda: support.connect(db_name))
    try:
        support.eventually(
            30, "every undecodable row parked",
            lambda: process_batch(session, inbox, registry, 10, threading.Event()) == 0
            and all_parked(db_name, inbox, spoiled),
        )
    finally:
        session.close()
    assert_parked_as_undecodable(db_name, inbox, spoiled, 2)
    assert handled == [good] and state(inbox, good).processed_at is not None


def test_sigterm_finishes_the_current_message_then_stops(db_name: str, tmp_path: pathlib.Path) -> None:
    inbox = "slow"
    first = support.insert_inbox(db_name, inbox, "key-a", b"{}", sequence=1)
    second = support.insert_inbox(db_name, inbox, "key-b", b"{}", sequence=2)
    proc = support.manage(
        "relay_worker", "--inbox", inbox, "--batch-size", "10", database=db_name, name="relay_worker-sigterm",
        RELAY_TEST_MARKERS=str(tmp_path), RELAY_TEST_SLOW_SECONDS="2",
    )
    started = support.eventually(60, "the first message's handler", lambda: sorted(tmp_path.iterdir()) or None, watch=(proc,))
    assert proc.terminate(within=30) == 0, proc.text()
    assert [p.name for p in started] == [f"{first}.started"], "messages are claimed oldest first"
    assert [p.name for p in tmp_path.iterdir()] == [f"{first}.started"], "no message started after SIGTERM"
    done = state(inbox, first)
    assert done.processed_at is not None and done.attempts == 0
    assert Entry.objects.filter(message_id=first).count() == 1
    waiting = state(inbox, second)
    assert (waiting.processed_at, waiting.attempts) == (None, 0)
    assert Entry.objects.filter(message_id=second).count() == 0


def test_the_psycopg_worker_runs_plain_handlers(db_name: str) -> None:
    inbox = "plain"
    with support.connect(db_name) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS plain_effect (message_id uuid, body text)")
    ids = [support.insert_inbox(db_name, inbox, f"k{i}", f"body {i}".encode(), sequence=i) for i in range(3)]
    env = {**os.environ, "DATABASE_URL": support.url(db_name), "PROCESSING_INBOX": inbox,
           "PROCESSING_HANDLERS": "plainhandlers", "PROCESSING_POLL_INTERVAL_MS": "100", "PYTHONPATH": str(support.TESTS)}
    proc = support.Process("relay-worker", [sys.executable, "-m", "relay.worker", "--workers", "2"], env)
    try:
        support.eventually(60, "three processed", lambda: all(state(inbox, i).processed_at for i in ids), watch=(proc,))
    finally:
        assert proc.terminate() == 0, proc.text()
    with support.connect(db_name) as conn:
        rows = conn.execute("SELECT message_id, body FROM plain_effect ORDER BY body").fetchall()
    assert rows == [(i, f"body {n}") for n, i in enumerate(ids)]


def test_workers_reconnect_after_their_connections_are_terminated(db_name: str, running: Any) -> None:
    from django.db import connection

    inbox = "retrying"
    first = support.insert_inbox(db_name, inbox, "reconnect-1", payment(1))
    running(inbox, workers=2)
    support.eventually(30, "the first message processed", lambda: state(inbox, first).processed_at)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        mine = cur.fetchone()[0]
    with support.connect(db_name) as admin:
        killed = admin.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid NOT IN (pg_backend_pid(), %s)) AS t",
            [db_name, mine],
        ).fetchone()[0]
    assert killed >= 3, "two workers and the listener were connected"
    second = support.insert_inbox(db_name, inbox, "reconnect-2", payment(2))
    support.eventually(30, "a message stored after the outage processed", lambda: state(inbox, second).processed_at)
    assert Entry.objects.filter(message_id__in=[first, second]).count() == 2


def test_the_listener_wakes_workers_only_for_its_inbox(db_name: str) -> None:
    from relay.listener import Wakeup, listen_loop

    wake, stop = Wakeup(), threading.Event()
    options = WorkerOptions(inbox="listened", poll_interval=0.1)
    t = threading.Thread(target=listen_loop, args=(lambda: support.connect(db_name), options, wake, stop))
    t.start()
    try:
        support.eventually(30, "the listener connected", lambda: wake.generation() >= 1)
        seen = wake.generation()
        with support.connect(db_name) as conn:
            conn.execute("SELECT pg_notify('relay_inbox', 'another-inbox')")
            conn.execute("SELECT pg_notify('relay_inbox', 'listened')")
        support.eventually(30, "the wake-up for its inbox", lambda: wake.generation() > seen)
        # Notifications arrive in order: the other inbox's came first and woke nobody.
        assert wake.generation() == seen + 1
    finally:
        stop.set()
        t.join(10)
