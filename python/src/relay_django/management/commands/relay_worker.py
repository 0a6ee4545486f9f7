"""``manage.py relay_worker``: runs the @relay.handler functions on an inbox's messages."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from relay.errors import ConfigurationError, StartupError
from relay_django.conf import relay_settings
from relay_django.worker import load_handlers, run


class Command(BaseCommand):
    help = (
        "Claims an inbox's messages and runs their handlers, each in one transaction with relay.done "
        "(a failure is recorded with relay.failed: retried, then parked). Stops after the current "
        "message on SIGTERM. Options default to settings.RELAY."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--inbox", help="the inbox (INBOX_NAME of its inbox-consumer); RELAY['INBOX']")
        parser.add_argument("--database", help="database alias; RELAY['DATABASE']")
        parser.add_argument("--workers", type=int, help="worker threads; RELAY['WORKERS']")
        parser.add_argument("--batch-size", type=int, help="messages per transaction; RELAY['BATCH_SIZE']")
        parser.add_argument("--poll-interval", type=float, help="seconds, at most 1; RELAY['POLL_INTERVAL']")

    def handle(self, *args: Any, **opts: Any) -> None:
        conf = relay_settings()
        options = conf.worker_options(
            inbox=opts["inbox"], workers=opts["workers"], batch_size=opts["batch_size"],
            poll_interval=opts["poll_interval"],
        )
        try:
            load_handlers(conf.handler_modules)
            run(options, opts["database"] or conf.database)
        except ConfigurationError as e:
            raise CommandError(str(e), returncode=2) from e
        except StartupError as e:
            raise CommandError(str(e), returncode=1) from e
