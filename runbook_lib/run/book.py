"""A runbook as the package defines it: title, whether it changes the target, its steps in order.

The notebook is generated from this definition (`runbook notebooks`), so the operator reads each
step's title and explanation exactly as the step itself carries them: one text, said once. The
module's docstring is the notebook's introduction; each step's docstring the text above its cell.
"""

from __future__ import annotations

import ast
import inspect
import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from runbook_lib.config.params import Params, Target
from runbook_lib.run.step import Step

PARAMETERS = '''# Parameters: `runbook run` replaces these; interactive runs use the defaults.
params_path = "../parameters/sandbox.yaml"
run_id = None
campaign = None
plan = False
resume_from = None
overrides = []
outputs_dir = None'''


@dataclass(frozen=True)
class Book:
    name: str
    title: str
    mutating: bool
    steps: tuple[Step, ...]


def _cell(cell_id: str, kind: str, source: str, **metadata: Any) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": kind, "id": cell_id, "metadata": metadata,
                            "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def notebook(module: ModuleType) -> dict[str, Any]:
    """The runbook's notebook: introduction, parameters, the run opened, one cell per step, the outcome."""
    book: Book = module.BOOK
    name = book.name
    names = {id(value): attr for attr, value in vars(module).items() if isinstance(value, Step)}
    intro = inspect.cleandoc(module.__doc__ or "")
    cells = [_cell("intro", "markdown", f"# {book.title}\n\n{intro}".strip()),
             _cell("parameters", "code", PARAMETERS, tags=["parameters"]),
             _cell("start", "code", f"from runbook_lib.books import {name} as book\nfrom runbook_lib.run import session\n\n"
                           f"rb = session.start(params_path, runbook={name!r}, run_id=run_id, campaign=campaign, "
                           "plan=plan,\n                   resume_from=resume_from, overrides=overrides, "
                           "outputs_dir=outputs_dir)\nrb")]
    for step in book.steps:
        cells.append(_cell(f"{step.name}-text", "markdown", f"## {step.title}\n\n{step.doc}".strip()))
        cells.append(_cell(step.name, "code", f"rb.run(book.{names[id(step)]})"))
    cells.append(_cell("finish", "code", "rb.finish()"))
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"},
                         "runbook": {"mutating": book.mutating, "title": book.title}}}


def render(module: ModuleType) -> str:
    return json.dumps(notebook(module), indent=1, ensure_ascii=False) + "\n"


def parameters_read(module: ModuleType) -> list[str]:
    """The parameter sections a book reads, found in its source: `<x>.params.<section>`, `<x>.target.<part>`,
    `requires("<section>", ...)`, and `_m(session)` (the migration section). Sections read only inside
    the operations a book calls are not seen; each step's guards name what it needs."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if node.value.attr == "params" and not node.attr.startswith("_"):
                found.add(node.attr)
            elif node.value.attr == "target" and not node.attr.startswith("_"):
                found.add(f"target.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "requires" and node.args and isinstance(node.args[0], ast.Constant):
                found.add(str(node.args[0].value))
            elif node.func.id == "_m":
                found.add("migration")
    fields = set(Params.model_fields) | {f"target.{name}" for name in Target.model_fields}
    return sorted(found & fields)  # not the methods and properties of Params (base_dir, endpoints, ...)


def sections_needed(module: ModuleType) -> dict[str, list[str]]:
    """Each parameters section a book's steps refuse without (their requires() guards) -> those steps."""
    needed: dict[str, list[str]] = {}
    for step in module.BOOK.steps:
        for guard in step.guards:
            if guard.section:
                needed.setdefault(guard.section, []).append(step.name)
    return needed


def sections_check(module: ModuleType, params: Any) -> list[tuple[str, str, bool]]:
    """(section, what the parameters hold for it, missing-and-needed) for every section the book reads."""
    needed = sections_needed(module)
    rows = []
    for section in sorted(set(parameters_read(module)) | set(needed)):
        value: Any = params
        for part in section.split("."):
            value = getattr(value, part, None)
        if value is not None:
            rows.append((section, "set", False))
        elif section in needed:
            rows.append((section, f"MISSING: steps {', '.join(needed[section])} refuse without it", True))
        else:
            rows.append((section, "not set (optional: the steps that read it skip it or use a default)", False))
    return rows


def describe(module: ModuleType) -> dict[str, Any]:
    """What `runbook describe` prints: the book's title, whether it changes the target, the parameter
    sections it reads, and each step with what it changes and what it needs first."""
    book: Book = module.BOOK
    intro = inspect.cleandoc(module.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    return {"name": book.name, "title": book.title, "mutating": book.mutating, "about": intro,
            "parameters": parameters_read(module),
            "steps": [{"name": s.name, "title": s.title, "changes": s.mutating, "gate": s.always_run,
                       "needs": [g.description for g in s.guards]} for s in book.steps]}
