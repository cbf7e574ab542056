"""papermill's own test notebooks and parameter cases (those its wheel ships in ``papermill/tests/``:
``notebooks/``, ``parameters/example.yaml`` and ``example.json``, the values its test_cli.py,
test_parameterize.py and test_execute.py pass), run by papermill's CLI and by ``nbsched run``
side by side. Each case compares what a user sees of a run: the parameters injected, whether it
succeeded, the error it names, papermill's warnings. They may differ only where README.md's
"Where nbsched differs from papermill" says why (``DIFFERENCES``).

Left out: ``keyboard_interrupt.ipynb`` (a 60 s sleep papermill's own tests only prepare, never
run), ``binder.ipynb`` (runs papermill on a path relative to papermill's source folder and writes
into the installed package), ``notimplemented_translator.ipynb`` (an R kernel) and
``test_autosave.ipynb`` (a kernelspec named ``python``): kernels not installed here, and
``gcs/``, ``s3/`` (cloud storage)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import papermill
import pytest
from conftest import nbsched

from nbsched.params import BUILTINS

PAPERMILL_TESTS = Path(papermill.__file__).parent / "tests"
README = Path(__file__).parents[1] / "README.md"
FIELDS = ("params", "outcome", "error", "warnings")


@dataclass(frozen=True)
class Case:
    id: str
    notebook: str
    args: tuple[str, ...] = ()  # papermill's: -p NAME VALUE, -f FILE, -y YAML
    folder: str = "."  # where the notebook lies, under the folder both commands run in


def p(name: str, value: str) -> tuple[str, ...]:
    return ("-p", name, value)


# the values papermill's own tests pass: test_cli.py's _resolve_type, test_execute.py's strings
VALUES = {
    "True": "True",
    "False": "False",
    "None": "None",
    "float": "12.51",
    "int": "10",
    "text": "hello world",
    "emoji": "\U0001f60d",
    "negative-float": "-23.2",
    "true": "true",
    "TRUE": "TRUE",
    "null": "null",
    "none": "none",
    "exponent": "1e3",
    "underscores": "1_000",
    "date": "2019-01-01",
    "empty": "",
    "quoted": '"Hello"',
    "backslash": r"do\ not\ crash",
    "backslash-quote": r"bar=\"baz\"",
    "double-backslash": r'\\"bar\\"',
    "json-list": "[1, 2]",
    "json-object": '{"a": 1}',
    "inf": "inf",
    "nan": "nan",
}
CASES = [
    *(Case(f"p-{name}", "simple_execute.ipynb", p("msg", value)) for name, value in VALUES.items()),
    Case("p-key-not-an-identifier", "simple_execute.ipynb", p("my-key", "1")),
    # test_cli.py's parameter files and YAML texts
    Case("f-yaml", "simple_execute.ipynb", ("-f", "example.yaml")),
    Case("f-json", "simple_execute.ipynb", ("-f", "example.json")),
    Case("f-yaml-then-json", "simple_execute.ipynb", ("-f", "example.yaml", "-f", "example.json")),
    Case("y-two", "simple_execute.ipynb", ("-y", '{"foo": "bar"}', "-y", '{"foo2": ["baz"]}')),
    Case("y-override", "simple_execute.ipynb", ("-y", '{"foo": "bar"}', "-y", '{"foo": ["baz"]}')),
    Case("y-date", "simple_execute.ipynb", ("-y", "a_date: 2019-01-01")),
    Case("y-datetime", "simple_execute.ipynb", ("-y", "at: 2019-01-01 12:30:00")),
    Case("y-yaml-booleans", "simple_execute.ipynb", ("-y", "{a: yes, b: off, c: ~}")),
    Case("empty-file-and-text", "simple_execute.ipynb", ("-f", "empty.yaml", "-y", "#empty")),
    Case(
        "many-args",
        "simple_execute.ipynb",
        ("-f", "example.yaml", "-y", '{"yaml_foo": {"yaml_bar": "yaml_baz"}}', *p("baz", "replace")),
    ),
    # test_execute.py's notebooks, as its tests run them
    Case("simple-execute", "simple_execute.ipynb"),
    Case("no-parameters-cell", "no_parameters.ipynb", p("msg", "Hello")),
    Case("no-parameters-cell-none-given", "no_parameters.ipynb"),
    Case("nb-version-4.4", "nb_version_4.4.ipynb", p("var", "It works")),
    Case("blank-vscode", "blank-vscode.ipynb", p("var", "It works")),
    Case("report-mode", "report_mode_test.ipynb", p("a", "0")),
    Case("result-no-exec", "result_no_exec.ipynb", (*p("foo", "2"), *p("bar", "world"))),
    Case("complex-parameters", "complex_parameters.ipynb", (*p("msg", "Hello"), *p("a", "3.5"))),
    Case("notebooknode-io", "test_notebooknode_io.ipynb"),
    Case("broken", "broken.ipynb"),
    Case("broken1", "broken1.ipynb"),
    Case("broken2", "broken2.ipynb"),
    Case("sysexit", "sysexit.ipynb"),
    Case("sysexit0", "sysexit0.ipynb"),
    Case("sysexit1", "sysexit1.ipynb"),
    Case("sysexit1-with-parameters", "sysexit1.ipynb", p("msg", "Hello")),
    Case("systemexit", "systemexit.ipynb"),
    Case("line-magic-error", "line_magic_error.ipynb"),
    Case("missing-module", "test_logging.ipynb"),
    Case("read-check-beside-the-notebook", "read_check.ipynb", folder="work"),
]

# case -> (the fields that differ, the README's reason, word for word)
DIFFERENCES = {
    "p-json-list": ({"params"}, "a `-p` value that starts with `[` or `{` is JSON"),
    "p-json-object": ({"params"}, "a `-p` value that starts with `[` or `{` is JSON"),
    "p-inf": ({"params", "outcome", "error"}, "`inf` and `nan` are refused"),
    "p-nan": ({"params", "outcome", "error"}, "`inf` and `nan` are refused"),
    "p-key-not-an-identifier": (
        {"params", "outcome", "error", "warnings"},
        "a parameter name must be a Python identifier",
    ),
    "blank-vscode": (
        {"params", "outcome", "error", "warnings"},
        "a notebook without kernel metadata runs in `python3`",
    ),
    "line-magic-error": ({"error"}, "names the exception the kernel replied with"),
    "read-check-beside-the-notebook": ({"outcome", "error"}, "a notebook runs in its own folder"),
}


@dataclass
class Seen:
    params: Any
    outcome: str
    error: tuple[str, str] | None
    warnings: list[str]


def _error_of(nb: dict[str, Any]) -> tuple[str, str] | None:
    """The error papermill names (its raise_for_execution_errors): the first error output, a
    SystemExit without a code or with 0 aside; else a CellExecutionError without a message, for
    a cell that failed without an error output (its traceback went to stderr)."""
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out["output_type"] == "error" and not (out["ename"] == "SystemExit" and out["evalue"] in ("", "0")):
                return out["ename"], (out["evalue"].strip().splitlines() or [""])[0]
        if (cell["metadata"].get("papermill") or {}).get("exception") is True:
            return "CellExecutionError", ""
    return None


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def by_papermill(case: Case, where: Path) -> Seen:
    """papermill's own CLI (its click command, here: its import is 2.4 s), run in ``where``."""
    from click.testing import CliRunner
    from papermill.cli import papermill as papermill_cli
    from papermill.iorw import local_file_io_cwd

    out = where / "papermill-out.ipynb"
    args = [f"{case.folder}/{case.notebook}", str(out), "--no-progress-bar", "--log-level", "WARNING", *case.args]
    warned, log = _Warnings(), logging.getLogger("papermill")
    log.addHandler(warned)
    try:
        # papermill's local file handler keeps a cwd of its own (process-wide): the notebooks run
        # in threads earlier in this process may have left it at another test's folder
        with local_file_io_cwd(str(where)):
            result = CliRunner().invoke(papermill_cli, args)
    finally:
        log.removeHandler(warned)
    nb = json.loads(out.read_text()) if out.exists() else None
    if nb is None:  # refused before it ran
        return Seen(None, "refused", ("error", f"{type(result.exception).__name__}: {result.exception}"), warned.lines)
    injected = any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    # without parameters papermill injects none, and keeps the notebook's metadata of an earlier run
    params = nb["metadata"]["papermill"].get("parameters", {}) if injected else {}
    failed = result.exit_code != 0
    return Seen(params, "failed" if failed else "success", _error_of(nb) if failed else None, warned.lines)


def nbsched_args(args: tuple[str, ...]) -> list[str]:
    """papermill's ``-p NAME VALUE`` as nbsched's ``-p NAME=VALUE``; ``-f`` and ``-y`` as they are."""
    out, it = [], iter(args)
    for word in it:
        out += ["-p", f"{next(it)}={next(it)}"] if word == "-p" else [word, next(it)]
    return out


def by_nbsched(case: Case, where: Path) -> Seen:
    proc = nbsched("run", f"{case.folder}/{case.notebook}", *nbsched_args(case.args), "--json", cwd=where)
    if proc.returncode == 2:  # refused: one line, no run
        (line,) = proc.stderr.strip().splitlines()
        return Seen(None, "refused", ("error", line), [])
    run = json.loads(proc.stdout)
    (task,) = run["tasks"].values()
    nb = json.loads(Path(task["output_path"]).read_text())
    params = {k: v for k, v in nb["metadata"]["papermill"]["parameters"].items() if k not in BUILTINS}
    failure = task["failure"]
    error = (failure["ename"], failure["evalue"]) if failure else None
    return Seen(params, run["state"], error, task["warnings"])


def _folder(case: Case, tmp_path: Path) -> Path:
    shutil.copytree(PAPERMILL_TESTS / "notebooks", tmp_path / case.folder, dirs_exist_ok=True)
    for name in ("example.yaml", "example.json"):
        shutil.copy(PAPERMILL_TESTS / "parameters" / name, tmp_path / name)
    (tmp_path / "empty.yaml").write_text("#empty")  # test_cli.py's test_parameters_empty
    (tmp_path / case.folder / "check.txt").write_text("exists")  # read_check.ipynb's, beside it
    return tmp_path


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_papermill_and_nbsched_agree_but_where_the_readme_says_why(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = _folder(case, tmp_path)
    monkeypatch.chdir(where)
    theirs, ours = by_papermill(case, where), by_nbsched(case, where)
    differ = {f for f in FIELDS if getattr(theirs, f) != getattr(ours, f)}
    expected = DIFFERENCES.get(case.id, (set(), ""))[0]
    assert differ == expected, f"papermill: {theirs}\nnbsched:   {ours}"


def test_every_difference_is_explained_in_the_readme() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    for case, (_, reason) in DIFFERENCES.items():
        assert case in {c.id for c in CASES}
        assert reason in text, f"README.md does not say why {case} differs: {reason!r}"
