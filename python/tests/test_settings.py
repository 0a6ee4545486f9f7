"""The test project reads RELAY_TEST_PG as libpq would: percent-encoded credentials and socket
directories must reach Django decoded, else the suite cannot connect where psql can."""

from __future__ import annotations

import pytest

from testproject.settings import connection_settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgres://postgres@127.0.0.1:5432",
            {"USER": "postgres", "PASSWORD": "", "HOST": "127.0.0.1", "PORT": "5432"},
        ),
        (
            "postgres://app%40bank:p%40ss%3Aw%2Fo%25rd%20x@db.Example.internal:6543",
            {"USER": "app@bank", "PASSWORD": "p@ss:w/o%rd x", "HOST": "db.Example.internal", "PORT": "6543"},
        ),
        (
            "postgres://postgres@%2Fvar%2Frun%2FPostgreSQL:5433",
            {"USER": "postgres", "PASSWORD": "", "HOST": "/var/run/PostgreSQL", "PORT": "5433"},
        ),
        (
            "postgres://postgres:s%23cret@[::1]:5432",
            {"USER": "postgres", "PASSWORD": "s#cret", "HOST": "::1", "PORT": "5432"},
        ),
        (
            "postgres://postgres@:5432?host=/tmp/sockets",
            {"USER": "postgres", "PASSWORD": "", "HOST": "/tmp/sockets", "PORT": "5432"},
        ),
    ],
)
def test_connection_urls_with_encoded_credentials_and_socket_directories_reach_django_decoded(
    url: str, expected: dict[str, str]
) -> None:
    assert connection_settings(url) == expected
