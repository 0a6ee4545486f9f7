"""The ``RELAY`` setting: one dict, every key optional, every problem reported at once.

======================== ===================== ==================================================
key                      default               meaning
======================== ===================== ==================================================
``SCHEMAS``              ``["outbox", "inbox"]`` which of Relay's schemas the migrations install
``DATABASE``             ``"default"``         the database alias ``relay_worker`` uses
``INBOX``                ``None``              the inbox ``relay_worker`` runs (or ``--inbox``)
``WORKERS``              ``1``                 worker threads, each with its own connection
``BATCH_SIZE``           ``1``                 messages claimed per transaction (one per key)
``POLL_INTERVAL``        ``1.0``               seconds between claims without a notification (<= 1)
``MAX_ATTEMPTS``         ``10``                failed attempts before a message parks
``BACKOFF_INITIAL_MS``   ``1000``              first retry delay; doubles per attempt
``BACKOFF_MAX_MS``       ``300000``            longest retry delay
``HANDLER_MODULES``      ``[]``                modules to import besides each app's ``relay_handlers``
``MIGRATION_LOCK_TIMEOUT`` ``"1s"``            how long a schema change may wait for a table lock
                                               before it steps aside and is retried (5 attempts)
======================== ===================== ==================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from relay.errors import ConfigurationError
from relay.options import WorkerOptions
from relay.schema import SCHEMAS

DEFAULTS: dict[str, Any] = {
    "SCHEMAS": ["outbox", "inbox"],
    "DATABASE": "default",
    "INBOX": None,
    "WORKERS": 1,
    "BATCH_SIZE": 1,
    "POLL_INTERVAL": 1.0,
    "MAX_ATTEMPTS": 10,
    "BACKOFF_INITIAL_MS": 1000,
    "BACKOFF_MAX_MS": 300_000,
    "HANDLER_MODULES": [],
    "MIGRATION_LOCK_TIMEOUT": "1s",
}

_DURATION = re.compile(r"^\d+(ms|s|min)$")


@dataclass(frozen=True)
class RelaySettings:
    schemas: tuple[str, ...]
    database: str
    inbox: Optional[str]
    handler_modules: tuple[str, ...]
    migration_lock_timeout: str
    worker: dict[str, Any]

    def worker_options(self, **overrides: Any) -> WorkerOptions:
        """The worker options from these settings, with command-line ``overrides`` (None = unset)."""
        values = dict(self.worker, inbox=self.inbox or "")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return WorkerOptions(**values)


def relay_settings() -> RelaySettings:
    """``settings.RELAY`` merged over :data:`DEFAULTS`; raises ``ImproperlyConfigured`` naming every
    invalid or unknown key."""
    given = getattr(settings, "RELAY", {})
    problems: list[str] = []
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"RELAY must be a dict, not {type(given).__name__}")
    problems += [f"RELAY[{k!r}]: unknown key (known: {', '.join(DEFAULTS)})" for k in given if k not in DEFAULTS]
    merged = {**DEFAULTS, **given}
    schemas = merged["SCHEMAS"]
    if not isinstance(schemas, (list, tuple)) or any(s not in SCHEMAS for s in schemas):
        problems.append(f"RELAY['SCHEMAS']: {schemas!r} must be a list of 'outbox' and/or 'inbox'")
        schemas = []
    if not isinstance(merged["DATABASE"], str) or merged["DATABASE"] not in settings.DATABASES:
        problems.append(f"RELAY['DATABASE']: {merged['DATABASE']!r} is not a key of DATABASES")
    inbox = merged["INBOX"]
    if inbox is not None and (not isinstance(inbox, str) or not inbox.strip()):
        problems.append(f"RELAY['INBOX']: {inbox!r} must be a non-empty str or None")
    modules = merged["HANDLER_MODULES"]
    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) and m for m in modules):
        problems.append(f"RELAY['HANDLER_MODULES']: {modules!r} must be a list of module names")
        modules = []
    timeout = merged["MIGRATION_LOCK_TIMEOUT"]
    if not isinstance(timeout, str) or not _DURATION.match(timeout):
        problems.append(f"RELAY['MIGRATION_LOCK_TIMEOUT']: {timeout!r} must look like '1s', '500ms' or '1min'")
    worker = {
        "workers": merged["WORKERS"],
        "batch_size": merged["BATCH_SIZE"],
        "poll_interval": merged["POLL_INTERVAL"],
        "max_attempts": merged["MAX_ATTEMPTS"],
        "backoff_initial_ms": merged["BACKOFF_INITIAL_MS"],
        "backoff_max_ms": merged["BACKOFF_MAX_MS"],
    }
    try:
        # The inbox may come from --inbox later; check the rest with a placeholder.
        WorkerOptions(inbox=inbox or "-", **worker).check()
    except ConfigurationError as e:
        problems += [f"RELAY[{p.split(':', 1)[0].upper()!r}]:{p.split(':', 1)[1]}" for p in e.problems]
    if problems:
        raise ImproperlyConfigured("invalid RELAY setting:\n  " + "\n  ".join(problems))
    return RelaySettings(
        schemas=tuple(s for s in SCHEMAS if s in schemas),
        database=merged["DATABASE"],
        inbox=inbox,
        handler_modules=tuple(modules),
        migration_lock_timeout=timeout,
        worker=worker,
    )
