"""The worker's options, checked in one place for the command line and Django's settings.

Every problem is collected, so one run reports all of them (:class:`ConfigurationError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigurationError

#: The contract: workers wake at least every second, for retries that become due.
MAX_POLL_INTERVAL = 1.0


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker process runs.

    ``inbox``: the inbox name (the inbox-consumer's ``INBOX_NAME``). ``workers``: threads, each
    with its own connection (1-64). ``batch_size``: messages claimed per transaction, at most one
    per key (1-1000). ``poll_interval``: seconds between claims when no notification arrives
    (0 < s <= 1). ``max_attempts``, ``backoff_initial_ms``, ``backoff_max_ms``: written to
    ``relay.processing`` at start (``relay.enable_processing``): failed attempts before a message
    parks, and the retry delay, doubling from the initial value up to the maximum.
    """

    inbox: str
    workers: int = 1
    batch_size: int = 1
    poll_interval: float = 1.0
    max_attempts: int = 10
    backoff_initial_ms: int = 1000
    backoff_max_ms: int = 300_000

    def check(self) -> None:
        """Raises :class:`ConfigurationError` naming every invalid option."""
        problems: list[str] = []
        if not isinstance(self.inbox, str) or not self.inbox.strip():
            problems.append("inbox: is required (the inbox-consumer's INBOX_NAME)")
        _int(problems, "workers", self.workers, 1, 64)
        _int(problems, "batch_size", self.batch_size, 1, 1000)
        if not _is_number(self.poll_interval) or not 0 < self.poll_interval <= MAX_POLL_INTERVAL:
            problems.append(f"poll_interval: {self.poll_interval!r} is not a number of seconds in (0, 1]")
        _int(problems, "max_attempts", self.max_attempts, 1, 1_000_000)
        _int(problems, "backoff_initial_ms", self.backoff_initial_ms, 1, 86_400_000)
        _int(problems, "backoff_max_ms", self.backoff_max_ms, 1, 86_400_000)
        if (
            isinstance(self.backoff_initial_ms, int)
            and isinstance(self.backoff_max_ms, int)
            and self.backoff_max_ms < self.backoff_initial_ms
        ):
            problems.append(
                f"backoff_max_ms: {self.backoff_max_ms} is below backoff_initial_ms {self.backoff_initial_ms}"
            )
        if problems:
            raise ConfigurationError(problems)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(problems: list[str], name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        problems.append(f"{name}: {value!r} is not a whole number from {low} to {high}")


def parse(problems: list[str], name: str, raw: str | None, convert: Callable[[str], Any], default: Any) -> Any:
    """``raw`` converted, or ``default`` when it is ``None``; a conversion error goes to ``problems``."""
    if raw is None:
        return default
    try:
        return convert(raw)
    except ValueError:
        problems.append(f"{name}: {raw!r} is not a valid {convert.__name__}")
        return default
