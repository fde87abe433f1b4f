"""Which pg_replication_slots rows a cutover must not decode from: each server version says it its own way."""

from __future__ import annotations

import pytest

from runbook_lib.ops.migration import invalidated


@pytest.mark.parametrize(("row", "why"), [
    ({"slot_name": "s", "wal_status": "reserved", "conflicting": False, "invalidation_reason": None}, None),
    ({"slot_name": "s", "wal_status": "reserved", "conflicting": True, "invalidation_reason": "rows_removed"},
     "rows_removed"),  # 17
    ({"slot_name": "s", "wal_status": "lost", "conflicting": False, "invalidation_reason": "wal_removed"},
     "wal_removed"),
    ({"slot_name": "s", "wal_status": "reserved", "conflicting": True}, "conflicting with recovery"),  # 16
    ({"slot_name": "s", "wal_status": "lost"}, "the WAL it needs was removed"),  # 13 to 15
    ({"slot_name": "s", "wal_status": "extended"}, None),
])
def test_an_invalidated_slot_is_named_with_its_reason(row: dict[str, object], why: str | None) -> None:
    assert invalidated(row) == why
