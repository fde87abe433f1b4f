"""A failed backup's leftovers: files removed (a full disk freed for the next try), a FAILED marker kept."""

from __future__ import annotations

from pathlib import Path

from runbook_lib.ops import backup


def test_a_failed_backup_is_emptied_and_marked(tmp_path: Path) -> None:
    partial = tmp_path / "20261207T000000Z.partial"
    (partial / "data" / "base").mkdir(parents=True)
    (partial / "data" / "base" / "16384").write_bytes(b"x" * 4096)
    (partial / "schema.sql").write_text("CREATE TABLE t ();")
    error = backup.ToolError("pg_basebackup failed: pg_basebackup: error: could not write to file "
                             "\"x/000000010000000000000003\": No space left on device\n"
                             "pg_basebackup: removing data directory \"x\"")
    said = backup._abandon(partial, error)
    assert [f.name for f in partial.rglob("*")] == ["FAILED"]
    marker = (partial / "FAILED").read_text()
    assert "No space left on device" in marker and "never use this backup" in marker
    assert "its files removed" in said


def test_an_interrupt_is_marked_with_its_kind(tmp_path: Path) -> None:
    partial = tmp_path / "b.partial"
    (partial / "data").mkdir(parents=True)
    backup._abandon(partial, KeyboardInterrupt())
    assert "KeyboardInterrupt" in (partial / "FAILED").read_text()
    assert not (partial / "data").exists()
