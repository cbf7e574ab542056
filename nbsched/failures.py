"""How a task's notebook failed, as data, and the one line it is shown as."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class TaskFailure:
    """An exception raised in a task's notebook, or by its kernel (dead under a cell, or never
    started: no cell then); papermill's ``PapermillExecutionError`` keeps the same facts.
    ``str()`` is the task's error: ``ValueError: bad input (cell 4: raise ValueError('bad input'))``."""

    ename: str  # the exception's name
    evalue: str  # the first line of its message; "" for one without (MemoryError)
    cell: int | None = None  # its position in the output notebook (1-based, as JupyterLab counts); None: no cell ran
    source: str = ""  # the cell's code on one line, as shown

    def __str__(self) -> str:
        line = f"{self.ename}: {self.evalue}" if self.evalue else self.ename
        return line if self.cell is None else f"{line} ({cell_label(self.cell, self.source)})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskFailure:
        return cls(ename=data["ename"], evalue=data["evalue"], cell=data.get("cell"), source=data.get("source", ""))


def cell_label(position: int, line: str) -> str:
    """``cell 4: import time; time.sleep(60)``: the position as the output notebook shows it."""
    return f"cell {position}: {line}"


def code_line(source: str) -> str:
    """A cell's code on one line, its statements joined, cut at 80 characters."""
    code = "; ".join(line.strip() for line in (source or "").splitlines() if line.strip())
    return code[:77] + "..." if len(code) > 80 else code


def first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""
