"""How a task's notebook failed, as data, and the one line it is shown as."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

INJECTED_TAG = "injected-parameters"  # papermill's tag on the cell of parameters it injects


@dataclass(frozen=True, kw_only=True)
class TaskFailure:
    """An exception raised in a task's notebook, or by its kernel (dead under a cell, or never
    started: no cell then); papermill's ``PapermillExecutionError`` keeps the same facts.
    ``str()`` is the task's error: ``ValueError: bad input (cell 4: raise ValueError('bad input'))``."""

    ename: str  # the exception's name
    evalue: str  # the first line of its message; "" for one without (MemoryError)
    # its cell's number in the user's notebook (see cell_numbers); None: no cell ran, or the injected one
    cell: int | None = None
    source: str = ""  # the cell's code on one line, as shown
    injected: bool = False  # it failed in the parameters cell papermill injected

    def __str__(self) -> str:
        line = f"{self.ename}: {self.evalue}" if self.evalue else self.ename
        if self.injected:
            return f"{line} ({INJECTED_LABEL})"
        return line if self.cell is None else f"{line} ({cell_label(self.cell, self.source)})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskFailure:
        return cls(
            ename=data["ename"],
            evalue=data["evalue"],
            cell=data.get("cell"),
            source=data.get("source", ""),
            injected=bool(data.get("injected")),
        )


INJECTED_LABEL = "injected parameters cell"


def cell_numbers(cells: Iterable[Mapping[str, Any]]) -> list[int | None]:
    """Each cell's number in the user's notebook, by its place in the notebook papermill runs:
    1 for the notebook's first cell, every cell counting (markdown too), and None for the
    parameters cell papermill injected, which the user's notebook does not have. papermill's
    own ``In [N]`` is an execution count instead: it counts the injected cell, not markdown."""
    numbers: list[int | None] = []
    count = 0
    for cell in cells:
        if INJECTED_TAG in ((cell.get("metadata") or {}).get("tags") or []):
            numbers.append(None)
        else:
            count += 1
            numbers.append(count)
    return numbers


def cell_label(number: int | None, line: str) -> str:
    """``cell 4: import time; time.sleep(60)`` (``number`` as :func:`cell_numbers` gives it), or
    the injected parameters cell (None)."""
    return INJECTED_LABEL if number is None else f"cell {number}: {line}"


def code_line(source: str) -> str:
    """A cell's code on one line, its statements joined, cut at 80 characters."""
    code = "; ".join(line.strip() for line in (source or "").splitlines() if line.strip())
    return code[:77] + "..." if len(code) > 80 else code


def first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""
