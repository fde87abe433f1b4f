"""The one root of every error the package raises on purpose.

Bad input, a refused step, an unreachable system: each is a `RunbookError`, so a caller
(the CLI, a notebook cell, a test) can tell the tool's own findings from a bug.
"""

from __future__ import annotations


class RunbookError(Exception):
    """An error the package raises on purpose; its message says what is wrong and what to do."""


def first_line(exc: BaseException) -> str:
    """An error's first line (a PostgreSQL error's DETAIL and HINT follow on later lines), or its type."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
