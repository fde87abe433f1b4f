"""The one root of every error the package raises on purpose.

Bad input, a refused step, an unreachable system: each is a `RunbookError`, so a caller
(the CLI, a notebook cell, a test) can tell the tool's own findings from a bug.
"""

from __future__ import annotations


class RunbookError(Exception):
    """An error the package raises on purpose; its message says what is wrong and what to do."""
