"""The sandbox's archive_command, run by sh as PostgreSQL would run it (no server needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runbook_lib.config.sandbox_spec import SandboxSpec
from runbook_lib.sandbox import pgconf


def archive(tmp_path: Path, name: str, content: bytes) -> int:
    source = tmp_path / "pg_wal" / name
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(content)
    command = pgconf.settings(SandboxSpec())["archive_command"].replace(pgconf.ARCHIVE_DIR, str(tmp_path / "archive"))
    command = command.replace("%p", str(source)).replace("%f", name)
    return subprocess.run(["sh", "-c", command], cwd=tmp_path).returncode


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    (tmp_path / "archive").mkdir()
    return tmp_path / "archive"


def test_a_new_file_is_copied_whole(tmp_path: Path, archive_dir: Path) -> None:
    assert archive(tmp_path, "000000010000000000000003", b"wal") == 0
    assert (archive_dir / "000000010000000000000003").read_bytes() == b"wal"
    assert not list(archive_dir.glob("*.tmp"))


def test_the_same_file_again_is_success_and_a_different_one_is_kept_beside(tmp_path: Path, archive_dir: Path) -> None:
    first = b"6\t0/5000000\tno recovery target specified\n"
    assert archive(tmp_path, "00000007.history", first) == 0
    assert archive(tmp_path, "00000007.history", first) == 0
    assert sorted(p.name for p in archive_dir.iterdir()) == ["00000007.history"]
    assert archive(tmp_path, "00000007.history", b"6\t0/6000000\tother\n") == 0
    assert (archive_dir / "00000007.history").read_bytes() == first
    conflicts = list(archive_dir.glob("00000007.history.conflict.*"))
    assert [p.read_bytes() for p in conflicts] == [b"6\t0/6000000\tother\n"]
    assert not list(archive_dir.glob("*.tmp"))


def test_a_failed_copy_is_a_failure(tmp_path: Path) -> None:
    assert archive(tmp_path, "000000010000000000000004", b"wal") != 0  # no archive directory
