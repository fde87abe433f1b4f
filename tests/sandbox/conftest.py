"""The sandbox is shared by the whole test session: the session-scoped `sandbox` fixture lives in
tests/conftest.py (it calls runbook_lib.sandbox.testing.session_sandbox: `up` once, reused, `down`
at the end unless RUNBOOK_KEEP_SANDBOX=1; RUNBOOK_RESET_SANDBOX=1 also removes the volumes)."""
