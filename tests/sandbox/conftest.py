"""The sandbox is shared by the test session: started once, reused, torn down at the end
(unless RUNBOOK_KEEP_SANDBOX=1)."""

from __future__ import annotations

import pytest

from runbook_lib.sandbox import testing


@pytest.fixture(scope="session")
def sandbox():
    yield from testing.session_sandbox()
