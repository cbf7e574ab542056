"""Where the command line's tables go: printed as aligned text in a terminal, or, while a
notebook's magic runs a command (``nbsched.magics``), handed to the magic, which shows them as
HTML tables. One definition of each command and of its output serves both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import click

TableSink = Callable[[list[str], list[list[str]]], None]  # (headers, rows)
_sink: ContextVar[TableSink | None] = ContextVar("nbsched_tables", default=None)


def table(headers: list[str], rows: list[list[str]]) -> None:
    """A table of cells (a cell may be styled, ``click.style``): aligned columns, or to the sink."""
    sink = _sink.get()
    if sink is not None:
        sink(headers, rows)
        return
    widths = [max(len(click.unstyle(str(c))) for c in col) for col in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        click.echo(
            "  ".join(
                str(c) + " " * (w - len(click.unstyle(str(c)))) for c, w in zip(row, widths, strict=True)
            ).rstrip()
        )


@contextmanager
def tables_to(sink: TableSink) -> Iterator[None]:
    """Hand the tables printed meanwhile (in this thread) to ``sink`` instead."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
