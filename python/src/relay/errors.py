"""The exceptions Relay's Python package raises, so callers can catch them by kind."""

from __future__ import annotations


class RelayError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidMessage(RelayError, ValueError):
    """A message given to :func:`relay.enqueue` cannot be sent as it is.

    ``problems`` lists every problem found (not just the first), each naming the argument.
    Nothing was written.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("relay.enqueue: " + "; ".join(self.problems))


class NotInTransaction(RelayError):
    """:func:`relay.enqueue` was called where it would commit on its own.

    The message must commit or roll back together with the business change, so the call has to
    run inside the caller's transaction (``transaction.atomic()`` in Django, a psycopg
    connection with autocommit off or inside ``conn.transaction()``). Nothing was written.
    """


class ConfigurationError(RelayError):
    """Settings or command-line options are invalid. ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid Relay configuration:\n  " + "\n  ".join(self.problems))


class StartupError(RelayError):
    """The worker could not start: the database refused or could not be reached."""


class HandlerConflict(RelayError):
    """Two handlers were registered for the same (inbox, topic, msg_type)."""
