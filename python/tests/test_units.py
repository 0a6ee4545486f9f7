"""Tests without a database: options, handler lookup, error text."""

from __future__ import annotations

import os
import sys
import threading

import pytest

import support
from relay import ConfigurationError, HandlerConflict, Message, Registry, handler, registry
from relay.options import WorkerOptions
from relay.worker import error_text
from relay_django import worker


def test_the_psycopg_worker_reports_every_bad_option_and_exits_2() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PROCESSING_WORKERS": "many", "PROCESSING_POLL_INTERVAL_MS": "5000",
           "PROCESSING_MAX_ATEMPTS": "3", "PROCESSING_BATCH_SIZE": "10"}
    proc = support.Process("relay-worker-bad", [sys.executable, "-m", "relay.worker", "--batch-size", "0"], env)
    assert proc.proc.wait(30) == 2
    text = proc.text()
    for fragment in ("database_url: is required", "handlers: is required", "inbox: is required",
                     "workers: 'many' is not a valid int", "batch_size: 0 is not a whole number",
                     "poll_interval_ms: 5000 is not a whole number of milliseconds",
                     "PROCESSING_MAX_ATEMPTS: unknown variable", "PROCESSING_BATCH_SIZE: unknown variable"):
        assert fragment in text, text


def test_the_psycopg_worker_reads_the_rust_workers_variables() -> None:
    from relay.cli import _parser, options_from

    env = {"DATABASE_URL": "postgres://app@db/ledger", "PROCESSING_INBOX": "ledger", "PROCESSING_HANDLERS": "a, b",
           "PROCESSING_WORKERS": "3", "PROCESSING_BATCH": "20", "PROCESSING_POLL_INTERVAL_MS": "250",
           "PROCESSING_MAX_ATTEMPTS": "5", "PROCESSING_BACKOFF_INITIAL_MS": "10", "PROCESSING_BACKOFF_MAX_MS": "99",
           "PROCESSING_LOG_LEVEL": "debug", "RELAY_WORKERS": "7", "RELAY_INBOX": "ignored"}
    options, url, modules = options_from(_parser().parse_args([]), env)
    assert options == WorkerOptions(inbox="ledger", workers=3, batch_size=20, poll_interval=0.25, max_attempts=5,
                                    backoff_initial_ms=10, backoff_max_ms=99)
    assert (url, modules) == ("postgres://app@db/ledger", ["a", "b"])


def test_a_worker_refuses_to_start_without_handlers_for_its_inbox() -> None:
    with pytest.raises(ConfigurationError, match="no handler is registered for inbox 'nobody'"):
        worker.run(WorkerOptions(inbox="nobody"), "default", threading.Event())


def test_handlers_match_most_specific_first_and_conflicts_are_refused() -> None:
    r = Registry()

    def a(m: Message) -> None: ...
    def b(m: Message) -> None: ...
    def c(m: Message) -> None: ...
    def d(m: Message) -> None: ...

    r.handler("in", topic="t", msg_type="m")(a)
    r.handler("in", msg_type="m")(b)
    r.handler("in", topic="t")(c)
    r.handler("in")(d)
    assert [r.find("in", "t", "m"), r.find("in", "x", "m"), r.find("in", "t", "x"), r.find("in", "x", "x")] == [a, b, c, d]
    assert r.find("other", "t", "m") is None
    with pytest.raises(HandlerConflict, match="two handlers for inbox 'in'"):
        r.handler("in")(a)
    worker.load_handlers(())
    assert registry.find("e2e", "any", "payment.created") is not None
    assert handler == registry.handler


def test_error_text_is_storable() -> None:
    assert error_text(ValueError("bad\x00byte")) == "ValueError: bad\\x00byte"
    assert error_text(KeyError()) == "KeyError"
    assert len(error_text(RuntimeError("x" * 10_000))) == 4000

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert error_text(Unprintable()).endswith("Unprintable: <the exception's message could not be read>")


def test_the_psycopg_worker_on_a_database_without_the_processing_schema_exits_1_saying_why() -> None:
    name = support.create_database()
    try:
        env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": support.url(name), "PROCESSING_INBOX": "plain",
               "PROCESSING_HANDLERS": "plainhandlers", "PYTHONPATH": str(support.TESTS)}
        proc = support.Process("relay-worker-no-schema", [sys.executable, "-m", "relay.worker"], env)
        assert proc.proc.wait(30) == 1
        text = proc.text()
        assert "cannot enable processing for inbox 'plain'" in text and "must be at V6" in text, text
        assert "Traceback" not in text, text
    finally:
        support.drop_database(name)


def test_a_failure_log_line_escapes_control_and_bidi_characters(caplog: pytest.LogCaptureFixture) -> None:
    from relay.worker import _record_failure

    class Session:
        def __init__(self, outcome: str) -> None:
            self.outcome = outcome

        def query(self, sql: str, params: list[object]) -> list[tuple[str]]:
            return [(self.outcome,)]

    hostile = "bad key \x1b[2J\x1b]0;pwn\x07 \u202e"
    with caplog.at_level("WARNING", logger="relay"):
        _record_failure(Session("retry"), "ledger", "id-1", 0, f"ValueError: {hostile}")
        _record_failure(Session("parked"), "ledger", "id-2", 9, f"ValueError: {hostile}")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert len(caplog.records) == 2, text
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in text, repr(text)
    assert "\\x1b[2J\\x1b]0;pwn\\x07" in text and "\\u202e" in text, text
