"""Relay for Python: send messages from PostgreSQL transactions, act on received ones exactly once.

- :func:`enqueue`: the origin side's ``relay.enqueue``, inside the caller's transaction (psycopg 3
  or Django), with headers as a ``dict`` and payloads as bytes, text or JSON.
- :func:`handler`, :class:`Message`: register the functions that act on an inbox's messages; the
  worker (``relay-worker``, or ``manage.py relay_worker`` with the ``relay_django`` app) runs
  each in the same transaction as ``relay.done``.
- :mod:`relay.schema`: Relay's schema scripts, accepted by outbox-poller and inbox-consumer.
"""

from .enqueue import enqueue
from .errors import (
    ConfigurationError,
    HandlerConflict,
    InvalidMessage,
    NotInTransaction,
    RelayError,
    StartupError,
)
from .handlers import Message, Registry, handler, registry

__all__ = [
    "ConfigurationError",
    "HandlerConflict",
    "InvalidMessage",
    "Message",
    "NotInTransaction",
    "Registry",
    "RelayError",
    "StartupError",
    "enqueue",
    "handler",
    "registry",
]
