"""Progress output for long sandbox steps: one line per step with its duration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console(stderr=False, highlight=False)


def info(msg: str) -> None:
    console.print(f"  {msg}")


def warn(msg: str) -> None:
    console.print(f"  [yellow]![/yellow] {msg}")


@contextmanager
def step(title: str) -> Iterator[None]:
    """Print a step's start and its outcome with elapsed seconds (why: `up` takes a minute)."""
    console.print(f"[bold]>[/bold] {title} ...")
    start = time.monotonic()
    try:
        yield
    except BaseException:
        console.print(f"[red]x[/red] {title} failed after {time.monotonic() - start:.1f}s")
        raise
    console.print(f"[green]ok[/green] {title} ({time.monotonic() - start:.1f}s)")
