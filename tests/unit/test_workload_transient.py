"""Which failed connections a load-test client tries again: the message or SQLSTATE decides, never the pooler's
catch-all 08P01 alone (PgBouncer refuses a wrong password with it)."""
from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from runbook_lib.ops.workload import _transient


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError('connection to server at "127.0.0.1", port 1 failed: Connection refused'),
    psycopg.OperationalError("connection timeout expired"),
    psycopg.OperationalError("server closed the connection unexpectedly"),
    errors.TooManyConnections("sorry, too many clients already"),
    errors.CannotConnectNow("the database system is starting up"),
    errors.AdminShutdown("terminating connection due to administrator command"),
    errors.ProtocolViolation("pgbouncer cannot connect to server"),
    errors.ProtocolViolation("no more connections allowed (max_client_conn)"),
], ids=str)
def test_a_passing_failure_is_tried_again(exc: psycopg.Error) -> None:
    assert _transient(exc)


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError('connection to server at "127.0.0.1", port 5432 failed: FATAL:  password '
                             'authentication failed for user "app"'),
    errors.InvalidPassword('password authentication failed for user "app"'),
    errors.InvalidCatalogName('database "nope" does not exist'),
    errors.ProtocolViolation('password authentication failed for user "app"'),
    errors.ProtocolViolation("no such database: nope"),
], ids=str)
def test_a_refused_login_or_missing_database_is_not(exc: psycopg.Error) -> None:
    assert not _transient(exc)
