"""The inbox worker: claim -> handler -> done, in one transaction, as the processing contract says.

For each batch: BEGIN; ``relay.claim(inbox, n)`` (at most one message per key, each the oldest
unprocessed one of its key, locked until COMMIT); for each message: SAVEPOINT; the handler (the
business effect, on the same connection); ``relay.done``; RELEASE. When the handler raises:
ROLLBACK TO SAVEPOINT and ``relay.failed`` (which retries it later or parks it); COMMIT. A crash
rolls everything back and the message is claimed again, so an effect is never applied twice.

Threads: N workers, each with its own connection, and one listener (``LISTEN relay_inbox``) that
wakes them when the inbox-consumer stored messages; they also claim at least every
``poll_interval`` seconds (retries falling due). SIGTERM/SIGINT: each worker finishes the message
it is on, commits, and the process exits 0.

The database access is behind :class:`Session`, so the same loop serves psycopg
(:class:`PsycopgSession`, ``relay-worker``) and Django (``manage.py relay_worker``, where the
transaction is Django's ``atomic()`` and handlers use the ORM).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import signal
import threading
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any, Callable, Optional, Protocol

from .errors import ConfigurationError, StartupError
from .handlers import Message, Registry
from .listener import Wakeup, listen_loop
from .options import WorkerOptions

log = logging.getLogger("relay.worker")

# The timestamps come as epoch seconds (numeric) and become datetimes in _message: a value no
# datetime can hold ('infinity', inserted past the consumer) must fail one message there, where it
# is recorded with relay.failed, not the fetch of the whole claim. The headers come as text, parsed
# the same way by every driver (psycopg would turn the jsonb string "x" into the str x, which
# Django's backend also uses for unparsed jsonb).
_CLAIM = (
    "SELECT message_id, source, topic, key, msg_type, content_type, payload, headers::text, traceparent, "
    "tracestate, sequence, extract(epoch FROM created_at), extract(epoch FROM received_at), attempts "
    "FROM relay.claim(%s, %s)"
)
_DONE = "SELECT relay.done(%s, %s)"
_FAILED = "SELECT relay.failed(%s, %s, %s)"
_ENABLE = "SELECT relay.enable_processing(%s, %s, %s, %s)"

#: The longest error text recorded for a failed attempt (characters).
MAX_ERROR_CHARS = 4000


class Session(Protocol):
    """One worker's database connection.

    ``transaction()`` opens a transaction, or a savepoint when one is open. ``query`` runs one
    statement and returns its rows (empty for none). ``reset`` drops a connection that failed,
    so the next use reconnects; ``close`` ends it. ``connection`` is what handlers get as
    :attr:`Message.connection`.
    """

    @property
    def connection(self) -> Any: ...

    def transaction(self) -> AbstractContextManager[Any]: ...

    def query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class PsycopgSession:
    """A :class:`Session` on a psycopg 3 connection made by ``connect`` (autocommit is set)."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None

    @property
    def connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            self._conn.autocommit = True
        return self._conn

    def transaction(self) -> AbstractContextManager[Any]:
        return self.connection.transaction()  # type: ignore[no-any-return]

    def query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def error_text(error: BaseException) -> str:
    """What ``relay.failed`` records: the exception's type and message, without NUL characters
    (PostgreSQL text cannot hold them), at most :data:`MAX_ERROR_CHARS` characters."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        detail = str(error)
    except Exception:  # a broken __str__ must not stop the failure being recorded
        detail = "<the exception's message could not be read>"
    text = f"{name}: {detail}" if detail else name
    return text.replace("\x00", "\\x00")[:MAX_ERROR_CHARS]


def process_batch(
    session: Session, inbox: str, registry: Registry, batch_size: int, stop: threading.Event
) -> int:
    """Claims up to ``batch_size`` messages and acts on each; returns how many were claimed.

    Stops before the next message once ``stop`` is set; claimed messages it did not reach are
    released unprocessed at COMMIT. Raises on database errors (the transaction rolled back).
    """
    with session.transaction():
        rows = session.query(_CLAIM, [inbox, batch_size])
        for row in rows:
            if stop.is_set():
                break
            # The id first: a row that cannot become a message is recorded as a failed attempt
            # (retried, then parked with the reason) instead of ending the transaction, which
            # would roll the claim back and hand every worker the same row again.
            message_id, attempts = row[0], row[-1]
            try:
                message = _message(inbox, row, session.connection)
            except Exception as e:
                _record_failure(session, inbox, message_id, attempts, f"the message cannot be decoded: {error_text(e)}")
                continue
            fn = registry.find(inbox, message.topic, message.msg_type)
            if fn is None:
                reason = (
                    f"no handler registered for inbox {inbox!r}, topic {message.topic!r}, "
                    f"msg_type {message.msg_type!r}"
                )
                _record_failure(session, inbox, message.message_id, message.attempts, reason)
                continue
            try:
                with session.transaction():
                    fn(message)
                    session.query(_DONE, [inbox, message.message_id])
            except Exception as e:  # the handler's failure: its effect is rolled back
                _record_failure(session, inbox, message.message_id, message.attempts, error_text(e))
            else:
                log.debug("processed message %s (%s, key %r)", message.message_id, message.topic, message.key)
        return len(rows)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _timestamp(column: str, epoch_seconds: Any) -> dt.datetime:
    """A timestamptz read as ``extract(epoch ...)`` (numeric), exactly to the microsecond."""
    try:
        micros = int(Decimal(str(epoch_seconds)) * 1_000_000)
        return _EPOCH + dt.timedelta(microseconds=micros)
    except (ArithmeticError, OverflowError, ValueError) as e:
        raise ValueError(f"column {column}: {epoch_seconds} seconds since 1970 is no datetime ({e})") from e


def _headers(raw: str) -> dict[str, str]:
    """The headers column (jsonb as text): a JSON object of strings, or ValueError saying what it is instead."""
    headers = json.loads(raw)
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        shown = json.dumps(headers)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise ValueError(f"column headers: not a JSON object of strings: {shown}")
    return headers


def _message(inbox: str, row: tuple[Any, ...], connection: Any) -> Message:
    """The message in a claimed row; raises (ValueError) when the row cannot be one."""
    (message_id, source, topic, key, msg_type, content_type, payload, headers, traceparent, tracestate,
     sequence, created_at, received_at, attempts) = row
    return Message(
        inbox=inbox,
        message_id=message_id,
        source=source,
        topic=topic,
        key=key,
        msg_type=msg_type,
        content_type=content_type,
        payload=bytes(payload),
        headers=_headers(headers),
        traceparent=traceparent,
        tracestate=tracestate,
        sequence=sequence,
        created_at=_timestamp("created_at", created_at),
        received_at=_timestamp("received_at", received_at),
        attempts=attempts,
        connection=connection,
    )


def _record_failure(session: Session, inbox: str, message_id: Any, attempts: int, error: str) -> None:
    """``relay.failed`` for a message that had ``attempts`` failed attempts before this one."""
    outcome = session.query(_FAILED, [inbox, message_id, error])[0][0]
    # %r: the error text can quote writer-chosen keys or payloads; repr escapes control and
    # bidirectional-override characters, so a log line cannot drive the operator's terminal.
    if outcome == "parked":
        log.error("message %s of inbox %r parked after %d attempts: %r", message_id, inbox, attempts + 1, error)
    else:
        log.warning("message %s of inbox %r failed, attempt %d, retried later: %r", message_id, inbox, attempts + 1, error)


class _Backoff:
    """Pauses after database errors: 0.1 s doubling to 10 s, jittered."""

    def __init__(self) -> None:
        self._next = 0.1

    def reset(self) -> None:
        self._next = 0.1

    def pause(self) -> float:
        delay = self._next * random.uniform(0.5, 1.0)
        self._next = min(self._next * 2, 10.0)
        return delay


def _work(
    sessions: Callable[[], Session], options: WorkerOptions, registry: Registry, wake: Wakeup,
    stop: threading.Event,
) -> None:
    session = sessions()
    backoff = _Backoff()
    try:
        while not stop.is_set():
            seen = wake.generation()
            try:
                claimed = process_batch(session, options.inbox, registry, options.batch_size, stop)
            except Exception:
                log.exception("claiming from inbox %r failed; retrying", options.inbox)
                session.reset()
                stop.wait(backoff.pause())
                continue
            backoff.reset()
            if claimed == 0:
                wake.wait(seen, options.poll_interval)
    finally:
        session.close()


def run(
    options: WorkerOptions,
    registry: Registry,
    sessions: Callable[[], Session],
    listen: Callable[[], Any],
    stop: Optional[threading.Event] = None,
) -> None:
    """Runs ``options.workers`` workers on ``options.inbox`` until ``stop`` is set or SIGTERM/SIGINT.

    ``sessions`` makes one :class:`Session` per worker thread (called in that thread);
    ``listen`` opens a psycopg 3 connection in autocommit mode for ``LISTEN``. Calls
    ``relay.enable_processing`` first. Raises :class:`ConfigurationError` for bad options or
    when no handler is registered for the inbox (every message would fail and park), and
    :class:`StartupError` when ``relay.enable_processing`` fails (database down, schema too old).
    """
    options.check()
    if options.inbox not in registry.inboxes():
        raise ConfigurationError([
            f"no handler is registered for inbox {options.inbox!r} (registered: "
            f"{sorted(registry.inboxes()) or 'none'}); import the module with the @handler functions"
        ])
    stop = stop or threading.Event()
    wake = Wakeup()
    first = sessions()
    try:
        with first.transaction():
            first.query(_ENABLE, [options.inbox, options.max_attempts, options.backoff_initial_ms, options.backoff_max_ms])
    except Exception as e:
        raise StartupError(
            f"cannot enable processing for inbox {options.inbox!r}: {e} (the inbox schema must be at V6 or "
            "later: run a current inbox-consumer, or `manage.py migrate` with relay_django)"
        ) from e
    finally:
        first.close()
    restore = _on_signals(stop, wake)
    threads = [threading.Thread(target=listen_loop, args=(listen, options, wake, stop), name="relay-listener", daemon=True)]
    threads += [
        threading.Thread(target=_work, args=(sessions, options, registry, wake, stop), name=f"relay-worker-{i}")
        for i in range(options.workers)
    ]
    log.info("relay worker: inbox %r, %d worker(s), batch %d", options.inbox, options.workers, options.batch_size)
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads[1:]):
            for t in threads[1:]:
                t.join(0.2)
    finally:
        stop.set()
        wake.bump()
        for t in threads:
            t.join(5)
        restore()
    log.info("relay worker stopped")


def _on_signals(stop: threading.Event, wake: Wakeup) -> Callable[[], None]:
    """Installs SIGTERM/SIGINT handlers (main thread only); returns what restores the old ones."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def graceful(signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing the current messages, then stopping", signum)
        stop.set()
        wake.bump()

    old = {s: signal.signal(s, graceful) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def main(argv: Optional[list[str]] = None) -> int:
    """``relay-worker`` / ``python -m relay.worker``: see :mod:`relay.cli`."""
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
