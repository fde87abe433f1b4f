"""What a rewritten PgBouncer [databases] line says: the staging checks the new backend by it."""

from __future__ import annotations

from runbook_lib.clients.pgbouncer import _target_of


def test_host_and_port_are_read_however_the_line_is_spaced() -> None:
    assert _target_of("app = host=10.0.0.5 port=5432 dbname=app") == ("10.0.0.5", 5432)
    assert _target_of("app=host=db-rw port=6432 dbname=app pool_size=20") == ("db-rw", 6432)
    assert _target_of("app = hostaddr=10.0.0.5 port=5432") is None  # no host= key: not what was staged
    assert _target_of("app = host=10.0.0.5 dbname=app") is None
    assert _target_of("app = host=10.0.0.5 port=54321 dbname=app") != ("10.0.0.5", 5432)
