"""``relay.enqueue`` for Python: the origin side's one call, inside the caller's transaction.

Wraps the SQL function ``relay.enqueue`` so Python values arrive as PostgreSQL expects them:
headers as a ``dict`` become ``jsonb`` (drivers cannot adapt a ``dict`` by themselves: "cannot
adapt type 'dict'"), payloads become ``bytea``. Everything is checked first and every problem is
reported in one :class:`~relay.errors.InvalidMessage`, so a bad message never reaches the
database half-built. Works with a psycopg 3 connection or cursor, and with Django's connection
or cursor (any DB-API cursor with ``execute``/``fetchone``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Union

from .errors import InvalidMessage, NotInTransaction

#: What ``payload`` may be: raw bytes are sent as they are; ``str`` as UTF-8 text; a ``dict`` or
#: ``list`` as JSON.
Payload = Union[bytes, bytearray, memoryview, str, Mapping[str, Any], list[Any]]

_SQL = "SELECT relay.enqueue(%s, %s, %s, %s::jsonb, %s, %s, %s, %s)"

OCTET_STREAM = "application/octet-stream"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def enqueue(
    conn: Any,
    topic: str,
    key: str,
    payload: Payload,
    *,
    headers: Mapping[str, str] | None = None,
    msg_type: str = "",
    content_type: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> uuid.UUID:
    """Enqueues one message in the caller's open transaction; returns its message id.

    ``conn``: a psycopg 3 ``Connection`` or ``Cursor``, or Django's ``connection`` (or
    ``connections[alias]``) or one of its cursors. The message commits or rolls back with that
    transaction: in Django call it inside ``transaction.atomic()``; with psycopg, on a
    connection with autocommit off (the default) or inside ``conn.transaction()``.

    ``payload``: ``bytes``/``bytearray``/``memoryview`` are sent as they are (content type
    ``application/octet-stream`` unless given); ``str`` is sent as UTF-8 (``text/plain;
    charset=utf-8``); a ``dict`` or ``list`` is sent as compact UTF-8 JSON (``application/json``).
    An explicit ``content_type`` always wins.

    ``headers``: a mapping of ``str`` to ``str`` (no NUL characters), stored as a JSON object.

    Raises :class:`InvalidMessage` listing every problem, :class:`NotInTransaction` when the
    call would commit on its own, and the driver's own error when the database refuses (for
    example a topic that is not a valid Kafka topic name).
    """
    problems: list[str] = []
    for name, value in (("topic", topic), ("key", key), ("msg_type", msg_type)):
        _check_text(problems, name, value)
    for name, optional in (("content_type", content_type), ("traceparent", traceparent), ("tracestate", tracestate)):
        if optional is not None:
            _check_text(problems, name, optional)
    body, default_type = _payload(problems, payload)
    headers_json = _headers(problems, headers)
    if problems:
        raise InvalidMessage(problems)
    params = [topic, key, body, headers_json, msg_type, content_type or default_type, traceparent, tracestate]
    return _execute(conn, params)


def _check_text(problems: list[str], name: str, value: object) -> None:
    if not isinstance(value, str):
        problems.append(f"{name} must be a str, not {type(value).__name__}")
    elif "\x00" in value:
        problems.append(f"{name} contains a NUL character, which PostgreSQL text cannot hold")


def _payload(problems: list[str], payload: object) -> tuple[bytes, str]:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), OCTET_STREAM
    if isinstance(payload, str):
        return payload.encode("utf-8"), TEXT
    if isinstance(payload, (Mapping, list)):
        try:
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            problems.append(f"payload cannot be encoded as JSON: {e}")
            return b"", JSON
        return text.encode("utf-8"), JSON
    problems.append(
        f"payload must be bytes, str, a dict or a list, not {type(payload).__name__} (encode it first)"
    )
    return b"", OCTET_STREAM


def _headers(problems: list[str], headers: object) -> str:
    if headers is None:
        return "{}"
    if not isinstance(headers, Mapping):
        problems.append(f"headers must be a dict of str to str, not {type(headers).__name__}")
        return "{}"
    for name, value in headers.items():
        if not isinstance(name, str):
            problems.append(f"header name {name!r} must be a str, not {type(name).__name__}")
        elif "\x00" in name:
            problems.append(f"header name {name!r} contains a NUL character")
        if not isinstance(value, str):
            problems.append(f"header {name!r} must have a str value, not {type(value).__name__}")
        elif "\x00" in value:
            problems.append(f"header {name!r} contains a NUL character")
    try:
        return json.dumps(dict(headers), ensure_ascii=False)
    except (TypeError, ValueError):
        return "{}"  # reported above: a name that is not a str


def _execute(conn: Any, params: list[Any]) -> uuid.UUID:
    _require_transaction(conn)
    if callable(getattr(conn, "fetchone", None)):
        conn.execute(_SQL, params)
        row = conn.fetchone()
    else:
        with conn.cursor() as cur:
            cur.execute(_SQL, params)
            row = cur.fetchone()
    value = row[0]
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _require_transaction(conn: Any) -> None:
    """Refuses a call that would commit on its own, outside the business change's transaction."""
    # The object itself, Django's cursor's wrapper (.db), a psycopg cursor's connection.
    candidates = [conn, getattr(conn, "db", None), getattr(conn, "connection", None)]
    for target in candidates:
        if hasattr(target, "in_atomic_block") and hasattr(target, "get_autocommit"):
            # Django: autocommit is on outside atomic(); each statement would commit by itself.
            if not target.in_atomic_block and target.get_autocommit():
                raise NotInTransaction(
                    "relay.enqueue must run inside transaction.atomic(), with the business change; "
                    "outside it the message would commit on its own"
                )
            return
    for target in candidates:
        if hasattr(target, "autocommit") and hasattr(target, "info"):
            # psycopg 3: in autocommit mode, outside conn.transaction(), the call commits at once.
            idle = target.info.transaction_status == 0  # psycopg.pq.TransactionStatus.IDLE
            if target.autocommit and idle:
                raise NotInTransaction(
                    "relay.enqueue must run inside the caller's transaction: this psycopg connection "
                    "is in autocommit mode and no transaction is open (use `with conn.transaction():`)"
                )
            return
