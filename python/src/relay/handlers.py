"""Handlers: which function acts on which inbox message, and the message they receive.

``@handler("ledger", topic="payments", msg_type="payment.created")`` registers a function in
the process-wide :data:`registry`; the worker (:mod:`relay.worker`, ``manage.py relay_worker``)
looks up one function per claimed message. Lookup is by exact inbox, then by the most specific
match: (topic, msg_type) before (any topic, msg_type) before (topic, any msg_type) before (any,
any). A message no handler matches is recorded as failed with that reason (it parks after the
inbox's max attempts), never silently marked done.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import HandlerConflict

#: A handler: called with the message, inside the worker's transaction (under a savepoint).
#: Returning means done; raising means failed (the effect is rolled back, the message retried).
Handler = Callable[["Message"], None]


@dataclass(frozen=True)
class Message:
    """One inbox message handed to a handler.

    ``payload`` is the raw bytes; :meth:`json` and :meth:`text` decode it. ``sequence`` is the
    origin outbox id (commit order within a key). ``attempts`` counts earlier failed attempts.
    ``connection`` is the connection the worker's transaction runs on (Django's connection
    wrapper under ``relay_worker``, a psycopg ``Connection`` under ``relay-worker``): write the
    business effect on it (in Django the ORM already does) so it commits with ``relay.done``.
    """

    inbox: str
    message_id: uuid.UUID
    source: str
    topic: str
    key: str
    msg_type: str
    content_type: str
    payload: bytes
    headers: dict[str, str]
    traceparent: Optional[str]
    tracestate: Optional[str]
    sequence: int
    created_at: dt.datetime
    received_at: dt.datetime
    attempts: int
    connection: Any = field(default=None, repr=False, compare=False)

    def json(self) -> Any:
        """The payload parsed as JSON (UTF-8). Raises ``ValueError`` when it is not JSON."""
        return json.loads(self.payload)

    def text(self) -> str:
        """The payload as UTF-8 text. Raises ``UnicodeDecodeError`` when it is not UTF-8."""
        return self.payload.decode("utf-8")


class Registry:
    """Handlers by (inbox, topic, msg_type); ``None`` matches any topic or msg_type."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, Optional[str], Optional[str]], Handler] = {}
        self._lock = threading.Lock()

    def handler(
        self, inbox: str, *, topic: Optional[str] = None, msg_type: Optional[str] = None
    ) -> Callable[[Handler], Handler]:
        """Decorator registering a handler; returns the function unchanged.

        Raises :class:`HandlerConflict` when another function is registered for exactly the same
        (inbox, topic, msg_type); registering the same function again is a no-op (a module
        imported twice).
        """
        if not isinstance(inbox, str) or not inbox:
            raise ValueError("handler: inbox must be a non-empty str")

        def register(fn: Handler) -> Handler:
            slot = (inbox, topic, msg_type)
            with self._lock:
                existing = self._handlers.get(slot)
                if existing is not None and _name(existing) != _name(fn):
                    raise HandlerConflict(
                        f"two handlers for inbox {inbox!r}, topic {topic!r}, msg_type {msg_type!r}: "
                        f"{_name(existing)} and {_name(fn)}"
                    )
                self._handlers[slot] = fn
            return fn

        return register

    def find(self, inbox: str, topic: str, msg_type: str) -> Optional[Handler]:
        """The handler for a message, most specific first; ``None`` when none matches."""
        with self._lock:
            for slot in ((inbox, topic, msg_type), (inbox, None, msg_type), (inbox, topic, None), (inbox, None, None)):
                fn = self._handlers.get(slot)
                if fn is not None:
                    return fn
        return None

    def inboxes(self) -> set[str]:
        """The inboxes at least one handler is registered for."""
        with self._lock:
            return {inbox for inbox, _, _ in self._handlers}

    def unregister(self, inbox: str, *, topic: Optional[str] = None, msg_type: Optional[str] = None) -> None:
        """Removes a registration (tests, reloading); absent ones are ignored."""
        with self._lock:
            self._handlers.pop((inbox, topic, msg_type), None)


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


#: The process-wide registry the workers use.
registry = Registry()

#: ``@handler(inbox, topic=..., msg_type=...)`` on :data:`registry`.
handler = registry.handler
