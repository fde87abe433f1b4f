"""One module per runbook, named as its notebook; each defines BOOK (its steps in order).

The index below names them; `load` imports one by name, so importing a book never imports the others.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

BOOKS = ("status", "load_test", "failover_drill", "readiness", "phase1_pre_migration", "phase2_migration",
         "phase3_verification", "rollback", "validation", "finalize")


def load(name: str) -> ModuleType:
    if name not in BOOKS:
        raise LookupError(f"no runbook {name!r} (known: {', '.join(BOOKS)})")
    return importlib.import_module(f"runbook_lib.books.{name}")


def write_notebooks(folder: Path) -> list[Path]:
    """Write every runbook's notebook from its book; returns the files whose text changed."""
    from runbook_lib.run.book import render

    changed = []
    for name in BOOKS:
        path = folder / f"{name}.ipynb"
        text = render(load(name))
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed
