"""IPython magics: ``%load_ext nbsched``, then ``%nbsched ...`` and ``%%nbsched_pipeline NAME``.

``%nbsched`` runs the command line's own click commands (``nbsched.cli``), so every command and
option of ``nbsched`` works in a cell, spelled the same, and an unknown one is an error. What a
command prints is kept as it is, its tables shown as HTML tables in a notebook (text in a
terminal); a mistake prints one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from nbsched.config import Config
from nbsched.console import tables_to
from nbsched.errors import NbschedError
from nbsched.render import render
from nbsched.service import Service

USAGE = """%nbsched COMMAND [OPTIONS]: the nbsched command line in a notebook, every command and option,
with its tables as HTML. `%nbsched COMMAND --help` lists a command's options. Also:
  %nbsched schedule PIPELINE --cron EXPR ...   schedule add
  %nbsched schedules                           schedule list
  %nbsched pause ID | %nbsched resume ID       schedule pause | resume
  %nbsched runs PIPELINE                       runs --pipeline PIPELINE
  %nbsched panel [PIPELINE]                    the run-history panel (refreshes itself)
  %%nbsched_pipeline NAME                      a cell of pipeline YAML (tasks, params, schedules) to register
"""
PROG = "%nbsched"


class Table:
    """A result that shows as an HTML table in a notebook and as text in a terminal. ``home``: the
    project's nbsched folder, whose ``templates/magics_table.html.j2`` may restyle it."""

    def __init__(
        self,
        title: str,
        headers: list[str],
        rows: list[list[Any]],
        state_column: int | None = None,
        *,
        home: Path | None = None,
    ):
        self.title, self.headers, self.rows, self.state_column = title, headers, rows, state_column
        self.home = home

    def __repr__(self) -> str:
        cells = [self.headers, *[[str(c) for c in r] for r in self.rows]]
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(self.headers))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        return "\n".join([self.title, *lines]) if self.title else "\n".join(lines)

    def _repr_html_(self) -> str:
        return render(
            "magics_table.html.j2",
            self.home,
            title=self.title,
            headers=self.headers,
            rows=self.rows,
            state_column=self.state_column,
        )


class Output:
    """What a command printed, in order: lines of text and tables (``tables``). Shown as HTML in
    a notebook (text as preformatted lines), as the command line's text in a terminal."""

    def __init__(self, home: Path | None) -> None:
        self.home = home
        self.blocks: list[str | Table] = []

    def write(self, text: str | bytes) -> int:  # stdout, while the command runs
        if isinstance(text, bytes):  # a library's empty flush (b"") among the lines
            text = text.decode(errors="replace")
        if self.blocks and isinstance(self.blocks[-1], str):
            self.blocks[-1] += text
        else:
            self.blocks.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        heads = [h.strip() for h in headers]
        state = next((i for i, h in enumerate(heads) if h == "STATE"), None)
        cells = [[click.unstyle(str(c)).strip() for c in row] for row in rows]
        self.blocks.append(Table("", heads, cells, state_column=state, home=self.home))

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    @property
    def text(self) -> str:
        return "".join(b if isinstance(b, str) else f"{b!r}\n" for b in self.blocks)

    def __repr__(self) -> str:
        return self.text.rstrip("\n")

    def _repr_html_(self) -> str:
        from html import escape

        return "".join(
            b._repr_html_() if isinstance(b, Table) else f'<pre class="nbsched">{escape(b.rstrip())}</pre>'
            for b in self.blocks
            if not isinstance(b, str) or b.strip()
        )


@magics_class
class NbschedMagics(Magics):
    def __init__(self, shell: Any, service: Service | None = None) -> None:
        super().__init__(shell)
        self._service = service

    @property
    def service(self) -> Service:
        if self._service is None:
            self._service = Service(Config.discover(Path.cwd()))
        return self._service

    @line_magic
    def nbsched(self, line: str) -> Any:
        return self._guarded(lambda: self._command(shlex.split(line)))

    @cell_magic
    def nbsched_pipeline(self, line: str, cell: str) -> Any:
        return self._guarded(lambda: self._register_cell(line.strip(), cell))

    def _guarded(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except click.UsageError as exc:  # an unknown command or option, a bad value: named as the CLI does
            where = exc.ctx.command_path.removeprefix(PROG).strip() if exc.ctx else ""
            hint = " (try %nbsched help)" if isinstance(exc, click.exceptions.NoSuchCommand) else ""
            print(f"nbsched: {where + ': ' if where else ''}{exc.format_message()}{hint}")
        except click.ClickException as exc:  # a mistake of the user's (NbschedError): its one line
            print(f"nbsched: {exc.format_message()}")
        except (NbschedError, ValueError) as exc:
            print(f"nbsched: {exc}")
        except click.exceptions.Abort:
            raise KeyboardInterrupt from None
        return None

    def _command(self, argv: list[str]) -> Any:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(USAGE)
            argv = ["--help"]
        elif argv[0] == "panel":
            panel = _panel.main(argv[1:], prog_name=f"{PROG} panel", standalone_mode=False, obj=self.service)
            return None if isinstance(panel, int) else panel  # an int: --help's exit code
        from nbsched.cli import cli

        service = self.service
        out = Output(service.config.home)
        config = service.config  # an option like --executor sets it for one command, not the next
        value = None
        with _restored_signals(), contextlib.redirect_stdout(out), tables_to(out.table):
            try:
                value = cli.main(_aliased(argv), prog_name=PROG, standalone_mode=False, obj=service)
            except SystemExit:  # exit 1: a run failed; what it printed says so
                pass
            finally:
                service.config = config
        if isinstance(value, str) or not out.tables:  # a value (a run id), or lines only: printed
            print(out.text, end="")
            return value if isinstance(value, str) else None
        return out

    def _register_cell(self, name: str, cell: str) -> Any:
        from nbsched.bounds import load_yaml
        from nbsched.dag import layer_lines

        if not name:
            raise ValueError("%%nbsched_pipeline needs a pipeline name: %%nbsched_pipeline NAME")
        # the cell is bounded as a spec file is: its size, its depth, its aliases, duplicate keys
        data = load_yaml(cell, f"%%nbsched_pipeline {name}") or {}
        if not isinstance(data, dict):
            raise ValueError(f"%%nbsched_pipeline {name}: the cell must be a YAML mapping (tasks: ...)")
        if "name" in data and data["name"] != name:
            raise ValueError(f"%%nbsched_pipeline {name}: the cell names the pipeline '{data['name']}'")
        spec, version, ids = self.service.register_spec({**data, "name": name}, Path.cwd(), source=name)
        layers = layer_lines(spec.order, spec.tasks)
        print(
            f"registered {spec.name} v{version}: {len(spec.tasks)} task(s) in {len(layers)} layer(s)"
            + (f", schedule(s) {', '.join(map(str, ids))}" if ids else "")
        )
        print("\n".join(f"  {line}" for line in layers))
        return None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pipeline", required=False)
@click.pass_obj
def _panel(service: Service, pipeline: str | None) -> Any:
    """The run-history panel (ipywidgets) of PIPELINE, or of every pipeline; it refreshes itself."""
    from nbsched.widgets import RunPanel

    try:
        return RunPanel(service, pipeline)
    except NbschedError as exc:
        raise click.ClickException(str(exc)) from None


_SCHEDULE_COMMANDS = ("add", "list", "pause", "resume", "rm", "-h", "--help")


def _aliased(argv: list[str]) -> list[str]:
    """The magics' short forms as the command line spells them."""
    command, rest = argv[0], argv[1:]
    if command == "schedule" and rest and rest[0] not in _SCHEDULE_COMMANDS:
        return ["schedule", "add", *rest]
    if command == "schedules":
        return ["schedule", "list", *rest]
    if command in ("pause", "resume"):
        return ["schedule", command, *rest]
    if command == "runs" and rest and not rest[0].startswith("-"):
        return ["runs", "--pipeline", *rest]
    return argv


@contextlib.contextmanager
def _restored_signals() -> Iterator[None]:
    """A command that runs notebooks takes Ctrl-C (SIGINT) and SIGTERM to cancel its run; the
    kernel's own handlers come back after it."""
    names = (signal.SIGINT, signal.SIGTERM)
    saved = [signal.getsignal(s) for s in names]
    try:
        yield
    finally:
        for s, handler in zip(names, saved, strict=True):
            if handler is not None:
                with contextlib.suppress(ValueError):  # not the main thread: nothing was changed
                    signal.signal(s, handler)
        sys.stdout.flush()


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(NbschedMagics(ipython))
