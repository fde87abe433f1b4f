"""The committed notebooks are what their books generate: a step's title and text are said once, in the book."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib import books
from runbook_lib.run.book import render

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


@pytest.mark.parametrize("name", books.BOOKS)
def test_notebook_is_generated_from_its_book(name: str) -> None:
    committed = (RUNBOOKS / f"{name}.ipynb").read_text()
    assert committed == render(books.load(name)), (
        f"runbooks/{name}.ipynb differs from runbook_lib/books/{name}.py: run `runbook notebooks`")


def test_every_runbook_has_a_book() -> None:
    assert sorted(p.stem for p in RUNBOOKS.glob("*.ipynb")) == sorted(books.BOOKS)


@pytest.mark.parametrize("name", books.BOOKS)
def test_every_step_is_explained(name: str) -> None:
    """Each step's cell has a title and an explanation above it (its docstring)."""
    undocumented = [s.name for s in books.load(name).BOOK.steps if not s.doc.strip()]
    assert not undocumented, f"{name}: steps without a docstring: {undocumented}"
