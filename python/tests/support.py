"""Helpers for the Relay package's tests: the real binaries, databases, inbox rows, waiting."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any, Callable, Optional, TypeVar

import psycopg

T = TypeVar("T")

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTS = pathlib.Path(__file__).resolve().parent
BIN = pathlib.Path(os.environ.get("RELAY_BIN_DIR", ROOT / "target" / "debug"))
LOGS = pathlib.Path(os.environ.get("RELAY_PY_LOGS", ROOT / "target" / "tmp" / "py-logs"))
PG = os.environ.get("RELAY_TEST_PG", "postgres://postgres@127.0.0.1:5432")


def brokers() -> str:
    value = os.environ.get("KAFKA_BROKERS")
    assert value, "KAFKA_BROKERS must name a broker; run the suite with `make test`"
    return value


def binary(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} is missing: build it first (`cargo build -p relay -p relay-demo --bins`)"
    return str(path)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def url(database: str) -> str:
    return f"{PG}/{database}"


def connect(database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url(database), autocommit=True)


def create_database() -> str:
    name = f"relay_it_py_{uuid.uuid4().hex[:12]}"
    with connect("postgres") as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return name


def drop_database(name: str) -> None:
    with connect("postgres") as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def create_topic(topic: str) -> None:
    subprocess.run(
        [binary("relay-demo"), "topics", "--brokers", brokers(), "--partitions", "1", topic],
        check=True, capture_output=True, timeout=60,
    )


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class Process:
    """A child process whose stderr goes to a log file under target/tmp/py-logs/."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Optional[pathlib.Path] = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"{unique(name)}.log"
        self._file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._file, stderr=subprocess.STDOUT
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, within: float = 20.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.log} did not exit within {within}s of SIGTERM")
        finally:
            self._file.close()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self._file.close()


def service(name: str, env: dict[str, str]) -> Process:
    base = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "info", "KAFKA_BROKERS": brokers()}
    return Process(name, [binary(name)], {**base, **env})


def poller(database: str, topic: str, **extra: str) -> Process:
    env = {
        "DATABASE_URL": url(database), "OUTBOX_SOURCE": "django-it", "OUTBOX_TOPICS": topic,
        "OUTBOX_POLL_INTERVAL_MS": "200", "OUTBOX_LEADER_RETRY_MS": "200",
    }
    return service("outbox-poller", {**env, **extra})


def consumer(database: str, inbox: str, topic: str, **extra: str) -> Process:
    env = {
        "DATABASE_URL": url(database), "INBOX_NAME": inbox, "INBOX_TOPICS": topic,
        "INBOX_GROUP_ID": unique(inbox), "KAFKA_PROPERTY_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_PROPERTY_HEARTBEAT_INTERVAL_MS": "500",
    }
    return service("inbox-consumer", {**env, **extra})


def manage(*args: str, database: str, name: str = "manage", **extra: str) -> Process:
    """``python manage.py <args>`` of the test project on ``database``, as its own process."""
    env = {**os.environ, "RELAY_PY_TEST_DB": database, "PYTHONUNBUFFERED": "1", **extra}
    return Process(name, [sys.executable, str(TESTS / "manage.py"), *args], env, cwd=TESTS)


def eventually(timeout: float, what: str, probe: Callable[[], Optional[T]], *, watch: tuple[Process, ...] = ()) -> T:
    """Polls ``probe`` until it returns something other than None/False; fails after ``timeout``
    seconds, or at once when a watched process exited (with its log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        for p in watch:
            assert p.alive(), f"{p.log.name} exited ({p.proc.returncode}) while waiting for {what}:\n{p.text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


def http_get(addr: str, path: str) -> Optional[tuple[int, str]]:
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None


def history(database: str, table: str) -> list[tuple[Any, ...]]:
    with connect(database) as conn:
        return conn.execute(f"SELECT version, name, applied_on, checksum FROM {table} ORDER BY version").fetchall()


def insert_inbox(
    database: str, inbox: str, key: str, payload: bytes, *, msg_type: str = "payment.created",
    topic: str = "payments", sequence: int = 1,
) -> uuid.UUID:
    """Stores one message in ``relay.inbox`` as the inbox-consumer would; returns its id."""
    message_id = uuid.uuid4()
    with connect(database) as conn:
        conn.execute(
            "INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload,"
            " headers, sequence, created_at, kafka_topic, kafka_partition, kafka_offset)"
            " VALUES (%s, %s, 'it', %s, %s, %s, 'application/json', %s, '{}', %s, now(), %s, 0, %s)",
            [inbox, message_id, topic, key, msg_type, payload, sequence, topic, sequence],
        )
    return message_id
