"""What names a pool, said in one line: the registered pipelines whose tasks take its slots,
and the unfinished tasks of runs, for ``pool rm`` to refuse (or, forced, to report)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbsched.spec import PipelineSpec

SHOWN = 3  # pipelines or runs named in a line; the others counted


def pool_users(pool: str, pipelines: Iterable[tuple[str, PipelineSpec]]) -> dict[str, list[str]]:
    """Each pipeline whose tasks name ``pool``, with those tasks, in run order."""
    named: dict[str, list[str]] = {}
    for name, spec in pipelines:
        tasks = [t for t in spec.order if spec.tasks[t].pool == pool]
        if tasks:
            named[name] = tasks
    return named


def refusal(pool: str, named: dict[str, list[str]], using: dict[str, int]) -> str:
    parts = []
    if named:
        parts.append(_pipelines(named))
    if using:
        parts.append(unfinished(using))
    return (
        f"pool '{pool}': used by {' and '.join(parts)}; "
        "change what uses it, or remove it with --force (their waiting tries then fail)"
    )


def removal(pool: str, named: dict[str, list[str]], failing: dict[str, int]) -> str:
    line = f"pool {pool}: removed"
    if named:
        still = _few(list(named))
        line += f"; pipeline{'s' if len(named) > 1 else ''} {still} still name{'' if len(named) > 1 else 's'} it "
        line += (
            "(its tries fail until it exists again)" if len(named) == 1 else "(their tries fail until it exists again)"
        )
    if failing:
        line += f"; {sum(failing.values())} waiting task(s) fail (run{'s' if len(failing) > 1 else ''} {_few(list(failing))})"
    return line


def _pipelines(named: dict[str, list[str]]) -> str:
    shown = [
        f"{name} (task{'s' if len(tasks) > 1 else ''} {', '.join(tasks[:SHOWN])}{', ...' if len(tasks) > SHOWN else ''})"
        for name, tasks in list(named.items())[:SHOWN]
    ]
    more = f" and {len(named) - SHOWN} more" if len(named) > SHOWN else ""
    return f"pipeline{'s' if len(named) > 1 else ''} {', '.join(shown)}{more}"


def unfinished(using: dict[str, int]) -> str:
    return f"{sum(using.values())} unfinished task(s) (run{'s' if len(using) > 1 else ''} {_few(list(using))})"


def _few(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
