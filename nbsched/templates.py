"""The one Jinja environment parameter templates render in: sandboxed and bounded.

Templates are hostile input: they come from specs, from ``-p`` on the command line and from
REST bodies, and they render inside the CLI, the runner and the Jupyter server's own process.
So they render in Jinja's :class:`~jinja2.sandbox.SandboxedEnvironment` (no ``_`` attributes,
no unsafe callables, ``range`` bounded), and through the sandbox's own hooks every render
has bounds:

- a rendered value is at most :data:`MAX_RENDERED` characters, and an operation that would
  make a bigger value (``'x' * 10**9``, ``s.ljust(10**9)``, ``s|center(10**9)``, ``a ~ b``)
  is refused before it runs, from the sizes of its operands;
- a render has a budget of work (:data:`MAX_WORK`): each character made, each loop step,
  each call and each template rendered spend some, so loops and macros always end.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from typing import Any, cast

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.exceptions import FilterArgumentError, SecurityError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_RENDERED = 1_000_000  # characters of one rendered value (1 MB)
MAX_WORK = 10_000_000  # per budget: about a second of rendering at worst
MAX_INT_DIGITS = 4300  # Python's own limit for printing an int (sys.int_info.default_max_str_digits)
_STEP = 10  # what a loop step costs, in characters made
_CALL = 200  # what a call costs (a macro call takes about 15 microseconds)
_RENDER = 100  # what rendering one template costs (compiled ones are cached)

# printf-style conversions (``%``, the ``format`` filter): a width or precision makes characters
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
# str.format fields (``{name!r:>10}``): numbers in a format spec make characters; a field nested
# in a spec (``{:{width}}``) takes its width from the arguments
_FIELD = re.compile(r"\{[^{}]*\{|\{[^{}:]*(?::([^{}]*))?\}")


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_WORK

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise SecurityError(
                f"the templates do too much work (more loop steps, calls and characters than "
                f"a budget of {MAX_WORK:,} allows: a loop or recursion that does not end?)"
            )


# The budget of the render in progress: Jinja calls the hooks below without a handle on the render,
# and the server renders in several threads at once (a context variable is per thread and task).
_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("nbsched_template_budget", default=None)


@contextmanager
def budget() -> Iterator[None]:
    """One work budget for every template rendered inside (e.g. every task of a dry run), so the
    bound holds for a spec, not per template. Nested uses share the outer budget."""
    if _BUDGET.get() is not None:
        yield
        return
    token = _BUDGET.set(_Budget())
    try:
        yield
    finally:
        _BUDGET.reset(token)


def spend(units: int) -> None:
    """Spend from the current budget (a caller walking parameters pays for its steps too)."""
    current = _BUDGET.get()
    if current is not None:  # always set while rendering; compile-time constant folding may run outside
        current.spend(units)


def _size(value: Any) -> int:
    """Characters ``value`` stands for, shallowly: a string's length, an int's digits, a container's
    items (and their lengths, one level down: ``[s] * n`` and ``[s, s, s]|join`` are big)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, (list, tuple, set, frozenset, dict)):
            items = value.values() if isinstance(value, dict) else value
            return len(value) + sum(len(v) for v in items if isinstance(v, (str, bytes)))
        return 1
    return int(abs(value).bit_length() * math.log10(2)) + 1


def _check(size: int, what: str) -> None:
    """Refuse an operation from the size of what it would make, before it makes it."""
    if size > MAX_RENDERED:
        raise SecurityError(f"{what} would make {size:,} characters (at most {MAX_RENDERED:,})")
    spend(size)


def _check_int(digits: int, what: str) -> None:
    if digits > MAX_INT_DIGITS:
        raise SecurityError(f"{what} would make a number of {digits:,} digits (at most {MAX_INT_DIGITS:,})")


def _printf_widths(fmt: str, what: str) -> int:
    """The characters the widths and precisions of a printf-style format ask for at most."""
    total = 0
    for m in _PRINTF.finditer(fmt):
        if "*" in (m.group(1), m.group(2)):
            raise SecurityError(f"{what}: a width taken from the arguments ('*') is not allowed")
        total += sum(int(g) for g in m.groups() if g)
    return total


def _format_widths(fmt: str, what: str) -> int:
    """The same for a ``str.format`` string (every number in a spec counted: an over-estimate)."""
    total = 0
    for m in _FIELD.finditer(fmt.replace("{{", "").replace("}}", "")):
        if m.group(0).count("{") > 1:
            raise SecurityError(f"{what}: a width taken from the arguments ('{{:{{...}}}}') is not allowed")
        total += sum(int(n) for n in re.findall(r"\d+", m.group(1) or ""))
    return total


def _binop_size(operator: str, left: Any, right: Any) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        if ints:
            _check_int(_size(left) + _size(right), "'*'")
        elif isinstance(left, int) or isinstance(right, int):
            times, seq = (left, right) if isinstance(left, int) else (right, left)
            _check(max(times, 0) * _size(seq), "'*'")
    elif operator == "**":
        if ints and right > 0 and abs(left) > 1:
            _check_int(int(right * math.log10(abs(left))) + 1, "'**'")
    elif operator == "+":
        if not (isinstance(left, (int, float)) and isinstance(right, (int, float))):
            _check(_size(left) + _size(right), "'+'")
    elif operator == "%" and isinstance(left, str):
        args = right if isinstance(right, tuple) else (right,)
        _check(len(left) + _printf_widths(left, "'%'") + sum(_size(a) for a in args), "'%'")


def _joined_size(items: Iterable[Any], sep: str = "") -> int:
    items = list(items)
    return sum(_size(i) if isinstance(i, str) else len(str(i)) for i in items) + len(sep) * len(items)


def _replaced_size(s: str, old: str, new: str, count: int | None = None) -> int:
    hits = len(s) + 1 if not old else s.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(len(new) - len(old), 0)


def _width_size(s: Any, width: Any = 0, *rest: Any, **kwargs: Any) -> int:
    return max(_size(s), width if isinstance(width, int) else 0)


# what the amplifying str methods and filters would make, from their arguments
_STR_METHODS: dict[str, Callable[..., int]] = {
    "ljust": _width_size,
    "rjust": _width_size,
    "center": _width_size,
    "zfill": _width_size,
    "expandtabs": lambda s, tabsize=8: len(s) + s.count("\t") * max(tabsize, 0),
    "replace": _replaced_size,
    "join": lambda sep, items: _joined_size(items, sep),
    "format": lambda s, *args, **kwargs: (
        len(s) + _format_widths(s, "str.format") + sum(_size(a) for a in (*args, *kwargs.values()))
    ),
    "format_map": lambda s, mapping: len(s) + _format_widths(s, "str.format_map") + _size(mapping),
}
_FILTERS: dict[str, Callable[..., int]] = {
    "center": _width_size,
    "indent": lambda s, width=4, *rest, **kw: (
        len(s) + (s.count("\n") + 1) * (width if isinstance(width, int) else len(str(width)))
    ),
    "wordwrap": lambda s, width=79, brk=True, wrapstring=None, *rest, **kw: (
        len(s) * (1 + len(wrapstring or "\n")) if width and width > 0 else len(s)
    ),
    "format": lambda s, *args, **kwargs: (
        len(s) + _printf_widths(s, "the 'format' filter") + sum(_size(a) for a in (*args, *kwargs.values()))
    ),
    "join": lambda items, d="", *rest, **kw: _joined_size(
        items if isinstance(items, (list, tuple, str)) else list(items), str(d)
    ),
    "replace": lambda s, old, new, count=None: _replaced_size(str(s), str(old), str(new), count),
    "slice": lambda value, slices, *rest: slices if isinstance(slices, int) else 0,
    "tojson": lambda value, indent=None: (indent or 0) * 1000,
}


def _metered_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that refuses to make a value over the limit, and spends what it makes."""
    estimate = _FILTERS.get(name)
    passes = getattr(fn, "jinja_pass_arg", None)  # @pass_context & co. take one leading argument

    @functools.wraps(fn)
    def metered(*args: Any, **kwargs: Any) -> Any:
        if estimate is not None:
            values = args[1:] if passes is not None else args
            if values and isinstance(values[0], Iterator):  # a generator is read once: keep what was read
                values = (list(values[0]), *values[1:])
                args = (*args[:1], *values) if passes is not None else values
            _check(estimate(*values, **kwargs), f"the '{name}' filter")
        result = fn(*args, **kwargs)
        spend(_STEP + (_size(result) if isinstance(result, (str, list)) else 0))
        return result

    return metered


def _date_filter(name: str, fmt: Callable[[date], str]) -> Callable[[Any], str]:
    def apply(value: Any) -> str:
        if isinstance(value, Undefined):
            str(value)  # StrictUndefined raises its error, which names the undefined variable
        if not isinstance(value, date):
            raise FilterArgumentError(f"'{name}' expects a date (like logical_date), got {value!r}")
        return fmt(value)

    return apply


class _Metering(NodeTransformer):
    """Routes each loop's items and each ``~`` through the environment, which meters them."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        loop = cast(nodes.For, self.generic_visit(node))  # a transformer gives back the node it visits
        loop.iter = _call_env("nbsched_steps", loop.iter, loop.lineno)
        return loop

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        concat = cast(nodes.Concat, self.generic_visit(node))
        return _call_env("nbsched_concat", nodes.List(concat.nodes), concat.lineno)


def _call_env(name: str, arg: nodes.Node, lineno: int) -> nodes.Call:
    call = nodes.Call(nodes.EnvironmentAttribute(name), [arg], [], None, None)
    call.set_lineno(lineno)
    return call


class ParamsEnvironment(SandboxedEnvironment):
    """The sandbox with the hooks above; build it with :func:`environment`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        # a parameter needs none of Jinja's other globals: lipsum makes text by the paragraph and
        # namespace carries values from one loop step to the next (values that double each step)
        self.globals = {"range": self.globals["range"], "dict": dict}
        self.filters = {name: _metered_filter(name, fn) for name, fn in self.filters.items()}
        self.filters.update(
            ds=_date_filter("ds", lambda d: d.strftime("%Y-%m-%d")),
            ds_nodash=_date_filter("ds_nodash", lambda d: d.strftime("%Y%m%d")),
            ts=_date_filter("ts", lambda d: d.isoformat()),
        )
        self._compiled = functools.lru_cache(maxsize=1024)(self._compile_template)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _binop_size(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        spend(_CALL)
        method = getattr(obj, "__wrapped__", obj)  # the sandbox hands out str.format wrapped
        owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
        if isinstance(owner, str) and name in _STR_METHODS:
            if name == "join" and args and isinstance(args[0], Iterator):  # read once: keep what was read
                args = (list(args[0]), *args[1:])
            _check(_STR_METHODS[name](owner, *args, **kwargs), f"str.{name}")
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, str):
            _check(len(result), "a call")
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        # a mapping's key before its method: ``upstream.rec.items`` is what rec recorded as
        # "items", not ``dict.items`` (Jinja prefers the attribute); ``rec.items()`` still calls
        # the method of a mapping without that key
        if isinstance(obj, Mapping) and attribute in obj:
            return self.getitem(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        result = super().getitem(obj, argument)
        if isinstance(result, (str, list)):
            spend(len(result))  # slices copy
        return result

    def nbsched_steps(self, items: Any) -> Iterator[Any]:
        for item in items:
            spend(_STEP)
            yield item

    def nbsched_concat(self, parts: list[Any]) -> str:
        texts = [str(p) for p in parts]
        _check(sum(len(t) for t in texts), "'~'")
        return "".join(texts)

    def _compile_template(self, source: str) -> Any:
        return self.from_string(_Metering().visit(self.parse(source)))

    def render(self, source: str, context: Mapping[str, Any]) -> str:
        """Render ``source``; its output stops at :data:`MAX_RENDERED` characters."""
        with budget():
            spend(_RENDER + len(source))
            out, size = [], 0
            # sources as long as a whole spec are not kept: the cache is for the small ones, rendered per task
            template = self._compiled(source) if len(source) <= 10_000 else self._compile_template(source)
            for chunk in template.generate(context):
                size += len(chunk)
                if size > MAX_RENDERED:
                    raise SecurityError(f"the rendered value is over {MAX_RENDERED:,} characters")
                spend(len(chunk))
                out.append(chunk)
            return "".join(out)


@functools.cache
def environment() -> ParamsEnvironment:
    """The one environment (built on first use: the CLI imports Jinja only when it renders)."""
    return ParamsEnvironment()
