"""The package's layers, read from its imports: a book never imports a book, ops never import the
session, config imports nothing above it, and no import circle exists (imports inside functions and
under TYPE_CHECKING count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "runbook_lib"
BASE = {"errors", "values"}

# what each part may import (besides itself and the base modules)
ALLOWED = {
    "config": set(),
    "clients": {"config"},
    "promql": {"config", "clients"},
    "campaign": {"config"},
    "run": {"config"},
    "ops": {"config", "clients", "promql", "run.step"},
    "readiness": {"config", "clients", "promql", "ops", "campaign", "run.runinfo"},
    "books": {"config", "clients", "promql", "ops", "campaign", "readiness", "run"},
    "sandbox": {"config", "clients", "promql"},
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str) -> set[str]:
    """Every runbook_lib module a file imports, wherever the import statement stands."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "runbook_lib" or m.startswith("runbook_lib.")}


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py") if "image" not in p.relative_to(root).parts}
    # `from runbook_lib.run import step` names the package too; an empty package __init__ holds nothing
    real = {name for name, path in files.items() if path.name != "__init__.py" or path.read_text().strip()}
    return {name: {m for m in imports(path, name) if m in real and m != name} for name, path in files.items()}


def part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def violations(deps: dict[str, set[str]]) -> list[str]:
    """Every import that crosses the layers the wrong way, as 'importer -> imported: rule'."""
    found = []
    for module, targets in sorted(deps.items()):
        mine = part(module)
        if mine not in ALLOWED:
            continue  # the CLI at the top may import anything
        for target in sorted(targets):
            theirs, rest = part(target), target.split(".", 2)[-1] if target.count(".") >= 2 else ""
            if theirs in BASE or theirs == mine or target == "runbook_lib":
                if mine == "books" and theirs == "books" and target != "runbook_lib.books":
                    found.append(f"{module} -> {target}: a book never imports another book")
                continue
            allowed = ALLOWED[mine]
            if theirs in allowed or f"{theirs}.{rest.split('.')[0]}" in allowed:
                continue
            found.append(f"{module} -> {target}: {mine} may import only {', '.join(sorted(allowed)) or 'the base'}")
    return found


def circles(deps: dict[str, set[str]]) -> list[str]:
    seen: set[str] = set()
    stack: list[str] = []
    found: list[str] = []

    def visit(module: str) -> None:
        if module in stack:
            found.append(" -> ".join(stack[stack.index(module):] + [module]))
            return
        if module in seen:
            return
        seen.add(module)
        stack.append(module)
        for dep in sorted(deps.get(module, ())):
            visit(dep)
        stack.pop()

    for module in sorted(deps):
        visit(module)
    return found


def test_the_package_keeps_its_layers() -> None:
    assert violations(graph()) == []


def test_the_package_has_no_import_circle() -> None:
    assert circles(graph()) == []


def test_a_violation_is_found(tmp_path: Path) -> None:
    """The rules bite: a book importing a book, ops importing the session, config importing run, a circle."""
    root = tmp_path / "runbook_lib"
    for rel, text in {
        "__init__.py": "", "errors.py": "",
        "books/__init__.py": "", "books/phase1.py": "from runbook_lib.books import phase2\n",
        "books/phase2.py": "def f():\n    from runbook_lib.run.session import Session\n",
        "run/__init__.py": "", "run/session.py": "from runbook_lib.run import step\n",
        "run/step.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runbook_lib.run.session import S\n",
        "ops/__init__.py": "", "ops/backup.py": "from runbook_lib.run.session import Session\n",
        "config/__init__.py": "", "config/params.py": "from runbook_lib.run import step\n",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    deps = graph(root)
    found = violations(deps)
    assert any(v.startswith("runbook_lib.books.phase1 -> runbook_lib.books.phase2: a book never") for v in found)
    assert any(v.startswith("runbook_lib.ops.backup -> runbook_lib.run.session") for v in found)
    assert any(v.startswith("runbook_lib.config.params -> runbook_lib.run") for v in found)
    assert not any(v.startswith("runbook_lib.books.phase2 ") for v in found)  # books may use the session
    assert circles(deps) == ["runbook_lib.run.session -> runbook_lib.run.step -> runbook_lib.run.session"]


def test_the_readme_layout_names_every_part() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    parts = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    missing = [name for name in parts if f"  {name}/" not in layout]
    assert not missing, f"README's layout section does not name runbook_lib/{missing}"
