"""Wake-ups for the workers: ``LISTEN relay_inbox`` on a connection of its own.

The inbox-consumer sends ``pg_notify('relay_inbox', <inbox>)`` after each batch that stored
messages has committed, in a short transaction of its own that does not wait for its WAL flush
(so consumers no longer wait on the notification lock for each other's flush). :class:`Wakeup` is a generation counter, so a notification that arrives while a
worker is still claiming is not lost: the worker sees the counter moved and claims again at
once. When the listening connection fails the workers still claim every poll interval, and the
listener reconnects with backoff.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .options import WorkerOptions

log = logging.getLogger("relay.worker")

#: The channel the inbox-consumer notifies (payload: the inbox name).
CHANNEL = "relay_inbox"


class Wakeup:
    """A counter workers wait on; :meth:`bump` wakes every waiter."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def generation(self) -> int:
        with self._cond:
            return self._generation

    def bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Returns once the counter differs from ``seen``, or after ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout)


def listen_loop(listen: Callable[[], Any], options: "WorkerOptions", wake: Wakeup, stop: threading.Event) -> None:
    """Listens until ``stop`` is set; bumps ``wake`` for each notification naming the inbox."""
    delay = 0.1
    while not stop.is_set():
        conn = None
        try:
            conn = listen()
            conn.execute(f"LISTEN {CHANNEL}")
            delay = 0.1
            wake.bump()  # anything stored while not listening
            while not stop.is_set():
                for note in conn.notifies(timeout=options.poll_interval):
                    if note.payload == options.inbox:
                        wake.bump()
        except Exception as e:
            if stop.is_set():
                break
            log.warning("LISTEN %s connection failed (%s); workers poll meanwhile", CHANNEL, e)
            stop.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 10.0)
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # already broken; nothing left to release
                    pass
