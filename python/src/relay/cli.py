"""``relay-worker`` (``python -m relay.worker``): the inbox worker for services using psycopg only.

Options come from flags or the environment (flag first); every invalid one is reported in one run
and the exit code is 2. The handlers are registered by importing ``--handlers`` modules, which use
``@relay.handler(...)``; each handler gets the message and writes its effect on
``message.connection`` (a psycopg 3 connection in the worker's transaction).

    DATABASE_URL=postgres://ledger@db/ledger relay-worker --inbox ledger --handlers ledger.handlers

The variables are the Rust worker's (``relay-processing``: ``PROCESSING_*``, same names and
units), plus ``PROCESSING_HANDLERS`` and ``PROCESSING_LOG_LEVEL``; an unknown ``PROCESSING_*``
name is reported as a typo. ``RELAY_*`` names belong to Relay's own services, which refuse
unknown ones, so the worker reads none.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, Optional

from .errors import ConfigurationError, StartupError
from .handlers import registry
from .options import WorkerOptions, parse
from .worker import PsycopgSession, run

EXIT_CONFIG = 2
EXIT_STARTUP = 1

_ENV = {
    "database_url": "DATABASE_URL",
    "inbox": "PROCESSING_INBOX",
    "handlers": "PROCESSING_HANDLERS",
    "workers": "PROCESSING_WORKERS",
    "batch_size": "PROCESSING_BATCH",
    "poll_interval_ms": "PROCESSING_POLL_INTERVAL_MS",
    "max_attempts": "PROCESSING_MAX_ATTEMPTS",
    "backoff_initial_ms": "PROCESSING_BACKOFF_INITIAL_MS",
    "backoff_max_ms": "PROCESSING_BACKOFF_MAX_MS",
}
_LOG_LEVEL = "PROCESSING_LOG_LEVEL"
#: Every ``PROCESSING_*`` name the worker reads; any other is reported as a typo.
KNOWN_PROCESSING = frozenset([*(v for v in _ENV.values() if v.startswith("PROCESSING_")), _LOG_LEVEL])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="relay-worker",
        description="Runs @relay.handler functions on an inbox's messages: claim, handle, done, in one transaction.",
        epilog="Each option may instead come from the variable in brackets. Exit codes: 0 stopped by "
        "SIGTERM/SIGINT; 1 could not start (database); 2 invalid configuration.",
    )
    for option, variable in _ENV.items():
        p.add_argument("--" + option.replace("_", "-"), dest=option, help=f"[{variable}]")
    p.add_argument("--log-level", default=os.environ.get(_LOG_LEVEL, "INFO"), help=f"[{_LOG_LEVEL}]")
    return p


def options_from(args: argparse.Namespace, env: dict[str, str]) -> tuple[WorkerOptions, str, list[str]]:
    """The worker options, database URL and handler modules; raises with every problem at once."""
    problems: list[str] = []
    raw = {k: getattr(args, k) if getattr(args, k) is not None else env.get(v) for k, v in _ENV.items()}
    url = raw["database_url"] or ""
    if not url:
        problems.append("database_url: is required (--database-url or DATABASE_URL)")
    problems += [
        f"{name}: unknown variable (known: {', '.join(sorted(KNOWN_PROCESSING))})"
        for name in sorted(env)
        if name.startswith("PROCESSING_") and name not in KNOWN_PROCESSING
    ]
    poll_ms = parse(problems, "poll_interval_ms", raw["poll_interval_ms"], int, 1000)
    if not 1 <= poll_ms <= 1000:
        problems.append(f"poll_interval_ms: {poll_ms} is not a whole number of milliseconds from 1 to 1000")
        poll_ms = 1000
    modules = [m.strip() for m in (raw["handlers"] or "").split(",") if m.strip()]
    if not modules:
        problems.append("handlers: is required: the module(s) with the @relay.handler functions (comma-separated)")
    options = WorkerOptions(
        inbox=raw["inbox"] or "",
        workers=parse(problems, "workers", raw["workers"], int, 1),
        batch_size=parse(problems, "batch_size", raw["batch_size"], int, 1),
        poll_interval=poll_ms / 1000,
        max_attempts=parse(problems, "max_attempts", raw["max_attempts"], int, 10),
        backoff_initial_ms=parse(problems, "backoff_initial_ms", raw["backoff_initial_ms"], int, 1000),
        backoff_max_ms=parse(problems, "backoff_max_ms", raw["backoff_max_ms"], int, 300_000),
    )
    try:
        options.check()
    except ConfigurationError as e:
        problems.extend(e.problems)
    if problems:
        raise ConfigurationError(problems)
    return options, url, modules


def main(argv: Optional[list[str]] = None) -> int:
    """Parses options, imports the handlers, runs until SIGTERM; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options, url, modules = options_from(args, dict(os.environ))
        problems = []
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as e:
                problems.append(f"handlers: cannot import {module}: {e}")
        if problems:
            raise ConfigurationError(problems)
        import psycopg

        def connect() -> Any:
            return psycopg.connect(url, autocommit=True)

        run(options, registry, lambda: PsycopgSession(connect), connect)
    except ConfigurationError as e:
        print(f"relay-worker: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as e:
        print(f"relay-worker: {e}", file=sys.stderr)
        return EXIT_STARTUP
    return 0
