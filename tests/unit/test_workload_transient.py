"""Which failed connections a load-test client tries again. A failed connect reaches it as an OperationalError
with libpq's text and no SQLSTATE; PgBouncer's refusals arrive the same way, with its words after FATAL."""
from __future__ import annotations

import psycopg
import pytest

from runbook_lib.ops.workload import _transient

AT = 'connection failed: connection to server at "127.0.0.1", port 6432 failed: '


@pytest.mark.parametrize("text", [
    "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
    "timeout expired",
    "server closed the connection unexpectedly",
    "FATAL:  sorry, too many clients already",
    "FATAL:  the database system is starting up",
    "FATAL:  the database system is shutting down",
    "FATAL:  the database system is not yet accepting connections",
    "FATAL:  pgbouncer cannot connect to server",
    "FATAL:  no more connections allowed (max_client_conn)",
    "FATAL:  server login has been failing, cached error: pause mode (server_login_retry)",
])
def test_a_passing_failure_is_tried_again(text: str) -> None:
    assert _transient(psycopg.OperationalError(AT + text))


@pytest.mark.parametrize("text", [
    'FATAL:  password authentication failed for user "app"',
    'FATAL:  database "nope" does not exist',
    "FATAL:  no such database: nope",
    'FATAL:  no pg_hba.conf entry for host "127.0.0.1", user "app", database "app", SSL encryption',
    'FATAL:  role "nobody" does not exist',
])
def test_a_refused_login_or_missing_database_is_not(text: str) -> None:
    assert not _transient(psycopg.OperationalError(AT + text))
