"""Sandboxed Jinja2 for step templates and condition expressions.

Templates are written by workflow builders and run on shared workers, so beyond the
Jinja2 sandbox (no ``__class__``, no ``mro``...) every render has a budget that stops a
template from hanging or flooding a worker:

- output: the rendered text is streamed and refused past ``max_output_chars``;
- values: no string or list the template builds (``*``, ``+``, ``~``, ``%``, filters,
  method calls) may exceed ``VALUE_SIZE_FACTOR * max_output_chars``, amplifying calls
  (``'x' * n``, ``|center(n)``, ``.ljust(n)``, ``'%9999999s'``) are refused *before*
  they allocate, and all the text built in one render is capped at
  ``ALLOCATION_FACTOR * max_output_chars``;
- time: all ``for`` iterations (nested ones too), recursive ``loop()`` calls and macro
  calls share one budget of ``max_loop_iterations``; ``range()`` is capped to it;
  integers from ``**``/``*`` stay under ``MAX_INT_BITS``;
- CPU: a render may be given a deadline (``max_seconds`` and/or an absolute monotonic
  ``deadline``: previews' setting, a step's ``timeout_seconds`` on a worker). The sandbox
  checks the clock at every loop iteration, macro call, call, operator, filter and output,
  so work that stays inside every size limit (sorting a long list in a loop) still stops.

The budget lives in a contextvar for the duration of one ``render`` or
``evaluate_expression`` call, so compiled templates can be cached and shared.
"""
from __future__ import annotations

import re
import string
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import Context, LoopContext, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .errors import TemplateError

DEFAULT_MAX_OUTPUT_CHARS = 200_000
DEFAULT_MAX_LOOP_ITERATIONS = 10_000
VALUE_SIZE_FACTOR = 5  # one value may be larger than the output (it may be sliced later)
ALLOCATION_FACTOR = 500  # text built per render; generous for ``ns.text ~ piece`` loops
MAX_INT_BITS = 8192  # ~2,500 decimal digits; Python refuses to print much more anyway

_LOOP_GUARD = "_pp_loop_guard"
_CONCAT_GUARD = "_pp_concat_guard"
_TEXT_GUARD = "_pp_text_guard"
_TEMPLATE_FILENAME = "<template>"


class _Refused(Exception):
    """A limit was hit. Plain Exception so Jinja's constant folding just gives up."""


class _OutOfTime(_Refused):
    """The render's time budget is spent."""


# --------------------------------------------------------------------------- budget


@dataclass
class _Budget:
    max_output_chars: int
    max_loop_iterations: int
    iterations: int = 0
    allocated: int = 0
    deadline: float | None = None  # time.monotonic() past which the render is refused
    seconds: float | None = None  # the budget that deadline stands for, for the message

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _OutOfTime(
                f"The template ran longer than its time budget of {self.seconds:g} s. It does too much work "
                "per render: loop over less data, or sort/filter once before a loop instead of inside it."
            )

    @property
    def max_value_chars(self) -> int:
        return self.max_output_chars * VALUE_SIZE_FACTOR

    def spend_iteration(self) -> None:
        self.check_time()
        self.iterations += 1
        if self.iterations > self.max_loop_iterations:
            raise _Refused(
                f"The template ran more than {self.max_loop_iterations:,} loop iterations and macro calls "
                "in one render (nested loops count every inner iteration). Loop over less data."
            )

    def check_planned(self, size: int, what: str = "a value") -> None:
        """Refuse *before* allocating when an operation would build something too large."""
        if size > self.max_value_chars:
            raise _Refused(
                f"The template would build {what} of about {size:,} characters or items, "
                f"over the limit of {self.max_value_chars:,}."
            )

    def check_built(self, value: Any, *, inputs: Iterable[Any] = ()) -> Any:
        """Count a value the template just built against the per-value and per-render caps."""
        self.check_time()
        size = _shallow_size(value)
        if size is None or any(value is item for item in inputs):
            return value  # not sized, or handed back unchanged (e.g. ``x|default('')``)
        self.check_planned(size)
        self.allocated += size
        if self.allocated > self.max_output_chars * ALLOCATION_FACTOR:
            raise _Refused(
                f"The template built more than {self.max_output_chars * ALLOCATION_FACTOR:,} characters "
                "of text in one render. Build the text once instead of growing it in a loop."
            )
        return value


_current_budget: ContextVar[_Budget | None] = ContextVar("promptpilot_template_budget", default=None)


def _budget() -> _Budget:
    # Outside a render (Jinja folding constants at compile time) the default limits apply.
    return _current_budget.get() or _Budget(DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_MAX_LOOP_ITERATIONS)


def _shallow_size(value: Any) -> int | None:
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return len(value)
    return None


def _text_size(value: Any, limit: int) -> int:
    """An upper bound of ``len(str(value))``, stopping as soon as it passes ``limit``.

    Lists holding the same big string many times are cheap in memory but not once
    printed, so every conversion of a container to text is priced first.
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item) + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        else:
            total += 32
    return total


def _check_text(budget: _Budget, value: Any, what: str = "text") -> None:
    if not isinstance(value, str):
        budget.check_planned(_text_size(value, budget.max_value_chars), what)


# ------------------------------------------------------------- size pre-checks


def _check_int(budget: _Budget, value: Any, what: str) -> None:
    if isinstance(value, int) and value > budget.max_value_chars:
        budget.check_planned(value, what)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(budget: _Budget, fmt: str, args: Any) -> None:
    """``'%9999999s' % x`` and ``'%*s' % (n, x)`` pad before we could measure."""
    star = False
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*":
                star = True
            elif number:
                _check_int(budget, int(number), "a padded value")
    values = args if isinstance(args, tuple) else (args,)
    for value in values:
        if star:
            _check_int(budget, value, "a padded value")
        _check_text(budget, value)


def _check_brace_format(budget: _Budget, fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``'{:>9999999}'.format(x)`` and ``'{:>{}}'.format(x, n)`` pad before we could measure."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the real call raises the same error with a better message
    nested = False
    for _literal, _field, spec, _conversion in fields:
        for number in re.findall(r"\d+", spec or ""):
            _check_int(budget, int(number), "a padded value")
        nested = nested or "{" in (spec or "")
    for value in (*args, *kwargs.values()):
        if nested:
            _check_int(budget, value, "a padded value")
        _check_text(budget, value)


def _replace_size(text: str | bytes, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, (str, bytes)) or not isinstance(new, (str, bytes)):
        return len(text)
    hits = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _precheck_method(budget: _Budget, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Price the str/bytes methods whose result can dwarf their inputs."""
    wrapped = getattr(obj, "__wrapped__", None)  # the sandbox wraps str.format / format_map
    name = getattr(obj, "__name__", "")
    if wrapped is not None and name in ("format", "format_map") and isinstance(getattr(wrapped, "__self__", None), str):
        mapping = args[0] if name == "format_map" and args and isinstance(args[0], dict) else {}
        _check_brace_format(budget, wrapped.__self__, args if name == "format" else (), {**kwargs, **mapping})
        return args
    target = getattr(obj, "__self__", None)
    if not isinstance(target, (str, bytes)):
        return args
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_int(budget, _arg(args, kwargs, 0, "width", 0), "a padded value")
    elif name == "expandtabs":
        tab = "\t" if isinstance(target, str) else b"\t"
        tabsize = _arg(args, kwargs, 0, "tabsize", 8)
        if isinstance(tabsize, int):
            budget.check_planned(len(target) + target.count(tab) * tabsize)
    elif name == "replace":
        budget.check_planned(_replace_size(target, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"), _arg(args, kwargs, 2, "count", -1)))
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        budget.check_planned(len(target) * max(1, longest))
    elif name == "join" and args:
        items = list(args[0])
        sizes = sum(len(item) for item in items if isinstance(item, (str, bytes)))
        budget.check_planned(sizes + len(target) * max(0, len(items) - 1))
        return (items, *args[1:])
    return args


# Filters that turn their input into text: a container input is priced first.
_STRINGIFYING_FILTERS = frozenset(
    "capitalize center e escape forceescape format indent lower pprint replace safe string striptags "
    "title tojson trim truncate upper urlencode urlize wordcount wordwrap xmlattr".split()
)


def _precheck_filter(budget: _Budget, name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Price the builtin filters whose result can dwarf their inputs; may return a materialised value."""
    if name in _STRINGIFYING_FILTERS:
        _check_text(budget, value)
    text_len = len(value) if isinstance(value, str) else 0
    if name == "center":
        _check_int(budget, _arg(args, kwargs, 0, "width", 80), "a padded value")
    elif name == "indent":
        width = _arg(args, kwargs, 0, "width", 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        lines = value.count("\n") + 1 if isinstance(value, str) else 1
        budget.check_planned(text_len + lines * pad)
    elif name in ("batch", "slice"):
        _check_int(budget, _arg(args, kwargs, 0, "linecount" if name == "batch" else "slices", 0), "a batch")
    elif name == "replace" and isinstance(value, str):
        budget.check_planned(_replace_size(value, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"), _arg(args, kwargs, 2, "count")))
    elif name == "wordwrap" and isinstance(value, str):
        width = _arg(args, kwargs, 0, "width", 79)
        wrap = _arg(args, kwargs, 2, "wrapstring") or "\n"
        if isinstance(width, int) and isinstance(wrap, str):
            budget.check_planned(text_len + (text_len // max(width, 1) + 1) * len(wrap))
    elif name == "format" and isinstance(value, str):
        _check_percent_format(budget, value, tuple(args) or tuple(kwargs.values()))
    elif name == "tojson":
        indent = _arg(args, kwargs, 0, "indent")
        if isinstance(indent, int) and indent > 32:
            raise _Refused("tojson(indent=...) above 32 is refused: it multiplies the output size.")
    elif name == "join":
        items = list(value)
        separator = _arg(args, kwargs, 0, "d", "")
        budget.check_planned(_text_size(items, budget.max_value_chars) + len(str(separator)) * max(0, len(items) - 1))
        return items
    return value


# ------------------------------------------------------------------ the guards


def _counted(budget: _Budget, iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        budget.spend_iteration()
        yield item


@pass_context  # pass_context also stops Jinja from folding the guard away at compile time
def _loop_guard(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    return _counted(_budget(), iterable)


@pass_context
def _concat_guard(context: Context, parts: list[Any]) -> str:
    budget = _budget()
    budget.check_planned(sum(len(p) if isinstance(p, str) else _text_size(p, budget.max_value_chars) for p in parts))
    return budget.check_built("".join(str(p) for p in parts))


@pass_context
def _text_guard(context: Context, text: str) -> str:
    # Forces literal text inside loops and macros through ``finalize`` so it is counted.
    return text


def _finalize(value: Any) -> str:
    """Every ``{{ ... }}`` output passes here, in captured blocks and macros too."""
    budget = _budget()
    _check_text(budget, value)
    return budget.check_built(value if isinstance(value, str) else str(value))


def _capped_range(*args: int) -> range:
    budget = _budget()
    numbers = range(*args)
    try:
        count = len(numbers)
    except OverflowError:
        count = budget.max_loop_iterations + 1
    if count > budget.max_loop_iterations:
        raise _Refused(f"range() of {count:,} numbers is over the loop limit of {budget.max_loop_iterations:,}.")
    return numbers


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @wraps(func)  # keeps ``jinja_pass_arg`` so Jinja still passes context/environment
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.check_time()
        value = _precheck_filter(budget, name, args[skip], args[skip + 1 :], kwargs)
        args = (*args[:skip], value, *args[skip + 1 :])
        return budget.check_built(func(*args, **kwargs), inputs=(value,))

    return guarded


def _power_bits(base: Any, exponent: Any) -> int:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        return abs(base).bit_length() * exponent
    return 0


class _Environment(ImmutableSandboxedEnvironment):
    """Immutable sandbox: templates cannot change ``input`` or earlier outputs either."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # ``input.items`` must be the variable "items", not ``dict.items``: for dicts,
        # keys win over methods (``x|items`` still lists the pairs).
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.check_time()
        if operator == "**" and _power_bits(left, right) > MAX_INT_BITS:
            raise _Refused(f"A power that large is refused: the result would exceed {MAX_INT_BITS} bits.")
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise _Refused(f"A product that large is refused: the result would exceed {MAX_INT_BITS} bits.")
            else:
                for seq, times in ((left, right), (right, left)):
                    if isinstance(times, int) and _shallow_size(seq) is not None:
                        budget.check_planned(_shallow_size(seq) * times, "a repeated value")
        if operator == "%" and isinstance(left, str):
            _check_percent_format(budget, left, right)
        return budget.check_built(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.check_time()
        if isinstance(__obj, Macro):
            # Macros (and ``caller()``) count like loop iterations: a macro calling itself
            # twice per level would otherwise run 2**depth times without a single loop.
            budget.spend_iteration()
            return super().call(__context, __obj, *args, **kwargs)
        if isinstance(__obj, LoopContext) and args:
            # ``loop(children)`` in a recursive for: the children are iterations too.
            return super().call(__context, __obj, _counted(budget, args[0]), *args[1:], **kwargs)
        args = _precheck_method(budget, __obj, args, kwargs)
        return budget.check_built(super().call(__context, __obj, *args, **kwargs), inputs=args)

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False) -> str:
        # Both templates and ``compile_expression`` pass through here with their AST.
        _Harden().visit(source)
        source.set_environment(self)
        return super()._generate(source, name, filename, defer_init=defer_init)


def _guard_filter(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Harden(NodeTransformer):
    """Rewrites the AST so loops, ``~`` and repeated literal text go through the guards."""

    _UNSUPPORTED = {
        nodes.Include: "include",
        nodes.Import: "import",
        nodes.FromImport: "from ... import",
        nodes.Extends: "extends",
    }

    def __init__(self) -> None:
        self._repeated = 0  # > 0 inside loop bodies and macros, where literal text repeats

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> nodes.Node:
        keyword = self._UNSUPPORTED.get(type(node))
        if keyword:
            raise TemplateSyntaxError(
                f'"{keyword}" is not available: a step template cannot load other templates.', node.lineno
            )
        return super().generic_visit(node, *args, **kwargs)

    def _visit_repeated(self, node: nodes.Node) -> nodes.Node:
        self._repeated += 1
        try:
            return self.generic_visit(node)
        finally:
            self._repeated -= 1

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self._visit_repeated(node)
        node.iter = _guard_filter(node.iter, _LOOP_GUARD)
        return node

    visit_Macro = _visit_repeated
    visit_CallBlock = _visit_repeated

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return _guard_filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT_GUARD)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        node = self.generic_visit(node)
        if self._repeated:
            node.nodes = [
                _guard_filter(child, _TEXT_GUARD) if isinstance(child, nodes.TemplateData) else child
                for child in node.nodes
            ]
        return node


def _build_environment() -> _Environment:
    env = _Environment(undefined=StrictUndefined, autoescape=False, finalize=_finalize)
    env.globals.pop("lipsum", None)  # unbounded text generator, and useless in prompts
    env.globals["range"] = _capped_range
    env.filters = {name: _guarded_filter(name, func) for name, func in env.filters.items()}
    env.filters.update({_LOOP_GUARD: _loop_guard, _CONCAT_GUARD: _concat_guard, _TEXT_GUARD: _text_guard})
    return env


_env = _build_environment()


# -------------------------------------------------------------- errors and API


def _template_line(exc: BaseException) -> int | None:
    """Jinja rewrites tracebacks so template frames carry template line numbers."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = lineno
    return line


def _to_template_error(exc: BaseException, kind: str = "template") -> TemplateError:
    if isinstance(exc, TemplateError):
        return exc
    if isinstance(exc, TemplateSyntaxError):
        reason, text = "syntax", f"The {kind} does not parse: {exc.message}"
    elif isinstance(exc, _OutOfTime):
        reason, text = "timeout", str(exc)
    elif isinstance(exc, _Refused):
        reason, text = "limit", str(exc)
    elif isinstance(exc, SecurityError):
        reason, text = "sandbox", f"The sandbox refused this: {exc}"
    elif isinstance(exc, UndefinedError):
        reason, text = "undefined", (
            f"Undefined value: {exc.message}. Templates see input.<variable>, "
            "steps.<step name>.output|outputs|status and trigger.type|payload."
        )
    elif isinstance(exc, RecursionError):
        reason, text = "limit", f"The {kind} recursed too deeply (a macro that calls itself without end?)."
    elif isinstance(exc, MemoryError):
        reason, text = "limit", f"The {kind} ran out of memory."
    else:
        reason, text = "error", f"{type(exc).__name__}: {exc}"
    # Expressions are one line; Jinja's traceback lines for them point at generated code.
    line = _template_line(exc) if kind == "template" or isinstance(exc, TemplateSyntaxError) else None
    if line is not None:
        text = f"Line {line}: {text}"
    return TemplateError(text, details={"reason": reason, "line": line})


@lru_cache(maxsize=512)
def _compile_template(source: str) -> Any:
    return _env.from_string(source)


@lru_cache(maxsize=512)
def _compile_expression(source: str) -> Any:
    return _env.compile_expression(source, undefined_to_none=False)


def _compile(source: str, kind: str) -> Any:
    if not isinstance(source, str):
        raise TemplateError(f"The {kind} must be a string, not {type(source).__name__}.", details={"reason": "syntax", "line": None})
    if kind == "expression" and not source.strip():
        raise TemplateError("The expression is empty.", details={"reason": "syntax", "line": None})
    try:
        return _compile_template(source) if kind == "template" else _compile_expression(source)
    except Exception as exc:  # syntax errors, RecursionError on absurd nesting...
        raise _to_template_error(exc, kind) from None


def _new_budget(max_output_chars: int, max_loop_iterations: int, max_seconds: float | None,
                deadline: float | None, deadline_seconds: float | None = None) -> _Budget:
    now = time.monotonic()
    ends = [end for end in (now + max_seconds if max_seconds else None, deadline) if end is not None]
    if not ends:
        return _Budget(max_output_chars, max_loop_iterations)
    end = min(ends)
    # The budget a builder can act on: the render's own, or the one the deadline stands for
    # (the step's timeout), else what was left of it.
    if max_seconds and end == now + max_seconds:
        seconds = max_seconds
    elif deadline_seconds is not None:
        seconds = deadline_seconds
    else:
        seconds = round(max(0.0, end - now), 1)
    return _Budget(max_output_chars, max_loop_iterations, deadline=end, seconds=seconds)


def render(
    source: str,
    context: Mapping[str, Any],
    *,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    max_loop_iterations: int = DEFAULT_MAX_LOOP_ITERATIONS,
    max_seconds: float | None = None,
    deadline: float | None = None,
    deadline_seconds: float | None = None,
) -> str:
    """Render a template; any failure is a TemplateError with a message for the builder.

    ``max_seconds`` bounds this render's time, ``deadline`` (``time.monotonic()``) the
    time of whatever it is part of (a step); the earlier one applies. ``deadline_seconds``:
    the budget the deadline stands for (the step's timeout), named if it runs out."""
    template = _compile(source, "template")
    token = _current_budget.set(_new_budget(max_output_chars, max_loop_iterations, max_seconds, deadline,
                                                deadline_seconds))
    chunks = template.generate(dict(context))
    parts: list[str] = []
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > max_output_chars:
                raise TemplateError(
                    f"The rendered text is longer than {max_output_chars:,} characters. "
                    "Shorten the template or the data it prints.",
                    details={"reason": "limit", "line": None},
                )
            parts.append(chunk)
    except Exception as exc:
        raise _to_template_error(exc) from None
    finally:
        chunks.close()
        _current_budget.reset(token)
    return "".join(parts)


def evaluate_expression(
    source: str,
    context: Mapping[str, Any],
    *,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    max_loop_iterations: int = DEFAULT_MAX_LOOP_ITERATIONS,
    max_seconds: float | None = None,
    deadline: float | None = None,
    deadline_seconds: float | None = None,
) -> Any:
    """Evaluate a sandboxed expression (``input.score > 3 and steps.a.status == "COMPLETED"``);
    ``max_seconds`` and ``deadline`` as for ``render``."""
    expression = _compile(source, "expression")
    token = _current_budget.set(_new_budget(max_output_chars, max_loop_iterations, max_seconds, deadline,
                                                deadline_seconds))
    try:
        value = expression(dict(context))
        if isinstance(value, Undefined):
            raise UndefinedError(value._undefined_message)
        if isinstance(value, Iterator):  # ``items|select(...)``: materialise inside the budget
            value = list(value)
    except Exception as exc:
        raise _to_template_error(exc, "expression") from None
    finally:
        _current_budget.reset(token)
    return value


def parse(source: str, *, kind: str = "template") -> nodes.Template | None:
    """The Jinja2 AST of a template or an expression (for static checks), or None when
    it does not parse (``validate_template`` / ``validate_expression`` say why)."""
    text = source if kind == "template" else "{{ " + source + " }}"
    try:
        return _env.parse(text)
    except Exception:  # syntax errors, RecursionError on absurd nesting
        return None


def global_names() -> frozenset[str]:
    """Names every template sees besides its context (``range``, ``namespace``...)."""
    return frozenset(_env.globals)


def validate_template(source: str) -> str | None:
    """A message (with line number) if the template does not compile, else None."""
    try:
        _compile(source, "template")
    except TemplateError as exc:
        return exc.message
    return None


def validate_expression(source: str) -> str | None:
    """A message (with line number) if the expression does not compile, else None."""
    try:
        _compile(source, "expression")
    except TemplateError as exc:
        return exc.message
    return None


def template_limits(limits: Mapping[str, Any] | None) -> dict[str, Any]:
    """``render`` keyword arguments from a limits mapping.

    Accepts the ``settings.PROMPTPILOT`` keys (``TEMPLATE_MAX_OUTPUT_CHARS``,
    ``TEMPLATE_MAX_LOOP_ITERATIONS``, ``TEMPLATE_MAX_SECONDS``) or the keyword names
    themselves, and ``deadline`` (a ``time.monotonic()`` value, e.g. the step's timeout)
    with ``deadline_seconds`` (the budget it stands for).
    """
    limits = limits or {}
    seconds = limits.get("TEMPLATE_MAX_SECONDS") or limits.get("max_seconds")
    return {
        "max_seconds": float(seconds) if seconds else None,
        "deadline": limits.get("deadline"),
        "deadline_seconds": limits.get("deadline_seconds"),
        "max_output_chars": int(
            limits.get("TEMPLATE_MAX_OUTPUT_CHARS") or limits.get("max_output_chars") or DEFAULT_MAX_OUTPUT_CHARS
        ),
        "max_loop_iterations": int(
            limits.get("TEMPLATE_MAX_LOOP_ITERATIONS") or limits.get("max_loop_iterations") or DEFAULT_MAX_LOOP_ITERATIONS
        ),
    }
