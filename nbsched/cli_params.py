"""The parameter options of every command that makes runs (``run``, ``trigger``, ``retry``,
``schedule add``, ``backfill``): papermill's ``-f FILE`` and ``-y YAML``, then ``-p key=value``,
merged in that order (as papermill merges them) into the command's ``overrides``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def param_options(p_help: str) -> Callable[[F], F]:
    """Add ``-f``, ``-y`` and ``-p`` (``p_help`` says what ``-p`` is for) to a command, which
    receives their merged values as ``overrides``."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def with_overrides(
            *args: Any, params: tuple[str, ...], params_files: tuple[str, ...], params_yaml: tuple[str, ...], **kw: Any
        ) -> Any:
            from nbsched.params import parse_override
            from nbsched.paramvalues import merged_params

            pairs = [parse_override(p) for p in params]
            return command(*args, overrides=merged_params(params_files, params_yaml, pairs), **kw)

        options = [
            click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help=p_help),
            click.option(
                "-y",
                "--params-yaml",
                "params_yaml",
                multiple=True,
                metavar="YAML",
                help="Parameters as YAML text, as papermill's -y (repeatable; -p wins).",
            ),
            click.option(
                "-f",
                "--params-file",
                "params_files",
                multiple=True,
                metavar="FILE",
                help="Parameters from a YAML or JSON file, as papermill's -f (repeatable; -y and -p win).",
            ),
        ]
        for option in options:
            with_overrides = option(with_overrides)
        return with_overrides  # type: ignore[return-value]

    return decorate
