"""relay.enqueue from Django and psycopg: dict headers, payload kinds, and every bad input refused."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction

import relay
import support
from orders.models import Order
from relay_django.models import OutboxMessage

pytestmark = pytest.mark.django_db


def outbox_count(topic: str) -> int:
    return OutboxMessage.objects.filter(topic=topic).count()


def test_dict_headers_from_django_land_in_the_outbox_as_given() -> None:
    with transaction.atomic():
        order = Order.objects.create(amount_cents=1000)
        message_id = relay.enqueue(
            connection, "payments", f"order-{order.id}", {"order": order.id, "amount_cents": 1000},
            headers={"tenant": "acme", "idempotency-key": "k-1", "unicode": "zürich ✓"},
            msg_type="payment.created", traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
    assert isinstance(message_id, uuid.UUID)
    row = OutboxMessage.objects.get(message_id=message_id)
    assert row.headers == {"tenant": "acme", "idempotency-key": "k-1", "unicode": "zürich ✓"}
    assert bytes(row.payload) == json.dumps({"order": order.id, "amount_cents": 1000}, separators=(",", ":")).encode()
    assert (row.content_type, row.msg_type, row.key) == ("application/json", "payment.created", f"order-{order.id}")
    assert row.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_payload_kinds_get_their_bytes_and_content_types() -> None:
    topic = support.unique("kinds")
    cases = [
        (b"\x00\xffraw", None, b"\x00\xffraw", "application/octet-stream"),
        (bytearray(b"ba"), None, b"ba", "application/octet-stream"),
        (memoryview(b"mv"), None, b"mv", "application/octet-stream"),
        ("grüße", None, "grüße".encode(), "text/plain; charset=utf-8"),
        ([1, "two"], None, b'[1,"two"]', "application/json"),
        (b"<x/>", "application/xml", b"<x/>", "application/xml"),
    ]
    with transaction.atomic(), connection.cursor() as cur:
        ids = [relay.enqueue(cur, topic, "k", p, content_type=ct) for p, ct, _, _ in cases]
    for message_id, (_, _, body, content_type) in zip(ids, cases):
        row = OutboxMessage.objects.get(message_id=message_id)
        assert (bytes(row.payload), row.content_type, row.headers) == (body, content_type, {})


def test_enqueue_on_a_psycopg_connection_and_cursor() -> None:
    topic = support.unique("psycopg")
    with psycopg.connect(support.url(connection.settings_dict["NAME"])) as conn:
        first = relay.enqueue(conn, topic, "k", b"1", headers={"a": "1"})
        with conn.cursor() as cur:
            second = relay.enqueue(cur, topic, "k", b"2", headers={"b": "2"})
        rows = conn.execute(
            "SELECT message_id, headers, payload FROM relay.outbox WHERE topic = %s ORDER BY id", [topic]
        ).fetchall()
        conn.rollback()
    assert rows == [(first, {"a": "1"}, b"1"), (second, {"b": "2"}, b"2")]


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"tenant": 42}, ["header 'tenant' must have a str value, not int"]),
        ({"nested": {"a": "b"}}, ["header 'nested' must have a str value, not dict"]),
        ({"none": None, "ok": "x"}, ["header 'none' must have a str value, not NoneType"]),
        ({1: "one"}, ["header name 1 must be a str, not int"]),
        ({"nul": "a\x00b"}, ["header 'nul' contains a NUL character"]),
        ([("a", "b")], ["headers must be a dict of str to str, not list"]),
        ({"a": 1, "b": [2]}, ["header 'a' must have a str value, not int", "header 'b' must have a str value, not list"]),
    ],
)
def test_bad_headers_are_refused_naming_every_problem_and_nothing_is_written(headers: object, expected: list[str]) -> None:
    topic = support.unique("bad-headers")
    with transaction.atomic():
        with pytest.raises(relay.InvalidMessage) as caught:
            relay.enqueue(connection, topic, "k", b"x", headers=headers)  # type: ignore[arg-type]
    assert caught.value.problems == expected
    assert outbox_count(topic) == 0


def test_every_bad_argument_is_reported_at_once() -> None:
    with transaction.atomic():
        with pytest.raises(relay.InvalidMessage) as caught:
            relay.enqueue(connection, 7, None, {1, 2}, headers={"h": 1}, msg_type=b"t")  # type: ignore[arg-type]
    assert caught.value.problems == [
        "topic must be a str, not int",
        "key must be a str, not NoneType",
        "msg_type must be a str, not bytes",
        "payload must be bytes, str, a dict or a list, not set (encode it first)",
        "header 'h' must have a str value, not int",
    ]
    with transaction.atomic():
        with pytest.raises(relay.InvalidMessage, match="payload cannot be encoded as JSON"):
            relay.enqueue(connection, "t", "k", {"when": object()})


def test_outside_a_transaction_nothing_is_enqueued() -> None:
    topic = support.unique("autocommit")
    # pytest-django wraps each test in atomic(); leave it to see Django's autocommit behaviour.
    assert connection.in_atomic_block
    with psycopg.connect(support.url(connection.settings_dict["NAME"]), autocommit=True) as conn:
        with pytest.raises(relay.NotInTransaction):
            relay.enqueue(conn, topic, "k", b"x")
        with conn.transaction():
            relay.enqueue(conn, topic, "k", b"x")
        with conn.transaction():
            conn.execute("SELECT 1")  # then a cursor outside any transaction
        with conn.cursor() as cur, pytest.raises(relay.NotInTransaction):
            relay.enqueue(cur, topic, "k", b"y")
        count = conn.execute("SELECT count(*) FROM relay.outbox WHERE topic = %s", [topic]).fetchone()
        conn.execute("DELETE FROM relay.outbox WHERE topic = %s", [topic])
    assert count == (1,)


def test_the_database_still_refuses_what_only_it_checks() -> None:
    with pytest.raises(DatabaseError, match="is not a valid Kafka topic name"):
        with transaction.atomic():
            relay.enqueue(connection, "no spaces allowed", "k", b"x")


@pytest.mark.django_db(transaction=True)
def test_django_outside_atomic_is_refused_and_inside_it_commits_with_the_change() -> None:
    topic = support.unique("django-autocommit")
    with pytest.raises(relay.NotInTransaction, match="transaction.atomic"):
        relay.enqueue(connection, topic, "k", b"x")
    with pytest.raises(relay.NotInTransaction):
        with connection.cursor() as cur:
            relay.enqueue(cur, topic, "k", b"x")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            Order.objects.create(amount_cents=1)
            relay.enqueue(connection, topic, "k", b"rolled back")
            raise RuntimeError("the business change failed")
    with transaction.atomic():
        Order.objects.create(amount_cents=2)
        kept = relay.enqueue(connection, topic, "k", b"kept")
    assert list(OutboxMessage.objects.filter(topic=topic).values_list("message_id", flat=True)) == [kept]
    assert list(Order.objects.values_list("amount_cents", flat=True)) == [2]
