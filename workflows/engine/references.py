"""What a definition's templates name, read from Jinja2's own AST (no regexes).

``definition_reference_problems`` is the save-time rule: a template may name
``input.<declared variable>``, ``steps.<earlier step>`` and ``trigger``; anything else
fails the step at run time (``StrictUndefined``), so it is refused when the definition
is saved. A name that is *guarded* (``x is defined``, inside ``{% if x is defined %}``,
or ``x | default(...)``) may legitimately be absent: it is saved with a warning.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import meta, nodes

from .templating import global_names, parse

ROOTS = ("input", "steps", "trigger")
# Names a template may use that are not context: Jinja's globals and loop helpers.
_BUILTIN_NAMES = frozenset({*global_names(), "loop", "caller", "varargs", "kwargs", "self", "super"})
_DEFINED_TESTS = frozenset({"defined", "undefined"})
_DEFAULT_FILTERS = frozenset({"default", "d"})


@dataclass(frozen=True)
class Reference:
    """``root`` is ``input`` / ``steps`` / ``trigger`` or an unknown top-level name;
    ``name`` the attribute after it (``input.name`` → ``name``), or None."""

    root: str
    name: str | None
    guarded: bool
    line: int | None


def _key(node: nodes.Node) -> tuple[str, str | None] | None:
    """(root, first attribute) for ``root``, ``root.attr``, ``root['attr']`` and deeper."""
    chain: list[str | None] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            chain.append(node.attr)
        else:
            chain.append(node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
        node = node.node
    if not isinstance(node, nodes.Name) or node.ctx != "load":
        return None
    return node.name, (chain[-1] if chain else None)


def _guarded_keys(test: nodes.Node) -> set[tuple[str, str | None]]:
    """Keys tested with ``is defined`` / ``is undefined`` anywhere in an ``if`` test."""
    found: set[tuple[str, str | None]] = set()
    for node in [test, *test.find_all(nodes.Test)]:
        if not isinstance(node, nodes.Test):
            continue
        if node.name in _DEFINED_TESTS and (key := _key(node.node)) is not None:
            found.add(key)
    return found


class _Collector:
    def __init__(self, roots: set[str]) -> None:
        self.roots = roots
        self.found: list[Reference] = []

    def visit(self, node: nodes.Node, guards: frozenset[tuple[str, str | None]]) -> None:
        if isinstance(node, (nodes.If, nodes.CondExpr)):
            inner = guards | _guarded_keys(node.test)
            self.visit(node.test, inner)
            body = node.body if isinstance(node, nodes.If) else [node.expr1]
            for child in body:
                self.visit(child, inner)
            rest = [*node.elif_, *node.else_] if isinstance(node, nodes.If) else [node.expr2] if node.expr2 else []
            for child in rest:
                self.visit(child, guards)
            return
        if isinstance(node, nodes.Test) and node.name in _DEFINED_TESTS:
            self._record(node.node, guarded=True)
            return
        if isinstance(node, nodes.Filter) and node.name in _DEFAULT_FILTERS and node.node is not None:
            self._record(node.node, guarded=True)
            for child in [*node.args, *[kw.value for kw in node.kwargs]]:
                self.visit(child, guards)
            return
        key = _key(node) if isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Name)) else None
        if key is not None and key[0] in self.roots:
            self.found.append(Reference(key[0], key[1], key in guards or (key[0], None) in guards, node.lineno))
            # ``steps[input.which]``: names inside subscripts are references too.
            for sub in _subscripts(node):
                self.visit(sub, guards)
            return
        for child in node.iter_child_nodes():
            self.visit(child, guards)

    def _record(self, node: nodes.Node, *, guarded: bool) -> None:
        key = _key(node)
        if key is not None and key[0] in self.roots:
            self.found.append(Reference(key[0], key[1], guarded, node.lineno))
        else:
            self.visit(node, frozenset())


def _subscripts(node: nodes.Node) -> Iterator[nodes.Node]:
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Const):
            yield node.arg
        node = node.node


def template_references(source: str, *, kind: str = "template") -> list[Reference]:
    """Every context name ``source`` reads (``kind``: ``template`` or ``expression``).

    A root the template assigns itself (``{% set input = ... %}``, a loop variable) is
    its own business and not reported; neither is a template that does not parse.
    """
    tree = parse(source, kind=kind) if isinstance(source, str) else None
    if tree is None:
        return []
    undeclared = meta.find_undeclared_variables(tree)
    roots = {name for name in undeclared if name not in _BUILTIN_NAMES}
    collector = _Collector(roots)
    collector.visit(tree, frozenset())
    return collector.found


# ----------------------------------------------------------------- the save rule


@dataclass(frozen=True)
class Problem:
    path: str  # "steps[2].config.template"
    step: str | None
    field: str  # "config.template"
    message: str


MAP_SCOPE = frozenset({"item", "index"})  # what a MAP step's inner templates see besides the rest


def step_templates(step: dict[str, Any]) -> list[tuple[str, str, str, frozenset[str]]]:
    """(field, source, kind, extra names it sees) of every template and expression a step
    runs: a MAP step's ``items`` and its inner step's templates (``config.step.…``), which
    also see ``item`` and ``index``."""
    config = step.get("config") if isinstance(step.get("config"), dict) else {}
    if step.get("type") != "MAP":
        return [(field, source, kind, frozenset()) for field, source, kind in _own_templates(step)]
    found = [("config.items", config["items"], "expression", frozenset())] if isinstance(config.get("items"), str) else []
    inner = config.get("step")
    if isinstance(inner, dict) and inner.get("type") != "MAP":
        found.extend((f"config.step.{field}", source, kind, MAP_SCOPE) for field, source, kind in _own_templates(inner))
    return found


def _own_templates(step: dict[str, Any]) -> list[tuple[str, str, str]]:
    config = step.get("config") if isinstance(step.get("config"), dict) else {}
    prompt = step.get("prompt") if isinstance(step.get("prompt"), dict) else {}
    found: list[tuple[str, str, str]] = []
    if step.get("type") == "CONDITION":
        if isinstance(config.get("expression"), str):
            found.append(("config.expression", config["expression"], "expression"))
        return found
    if step.get("type") == "APPROVAL" and isinstance(config.get("message"), str):
        found.append(("config.message", config["message"], "template"))
    if step.get("type") == "DELAY" and isinstance(config.get("until"), str):
        found.append(("config.until", config["until"], "template"))
    if config.get("template"):
        found.append(("config.template", config["template"], "template"))
    elif step.get("type") == "PROMPT" and prompt.get("template"):
        found.append(("prompt.template", prompt["template"], "template"))
    if step.get("type") == "PROMPT":
        if config.get("system"):
            found.append(("config.system", config["system"], "template"))
        elif prompt.get("system"):
            found.append(("prompt.system", prompt["system"], "template"))
    return [(field, source, kind) for field, source, kind in found if isinstance(source, str)]


def _problem(index: int, step: dict[str, Any], field: str, message: str) -> Problem:
    name = step.get("name")
    return Problem(f"steps[{index}].{field}", name if isinstance(name, str) else None, field,
                   f'Step "{name}": {message}')


def _reference_message(ref: Reference, *, variables: list[str], step_order: Any,
                       orders: dict[str, Any], scope: frozenset[str] = frozenset()) -> str | None:
    shown = f"{ref.root}.{ref.name}" if ref.name else ref.root
    where = f" (line {ref.line})" if ref.line and ref.line > 1 else ""
    if ref.root == "input":
        if ref.name is None or ref.name in variables:
            return None
        known = ", ".join(variables) or "none declared"
        return f'{shown}{where} is not a variable of this workflow (variables: {known}).'
    if ref.root == "steps":
        if ref.name is None:
            return None
        if ref.name not in orders:
            return f'{shown}{where} names no step of this workflow.'
        if isinstance(step_order, int) and isinstance(orders[ref.name], int) and orders[ref.name] >= step_order:
            return (f'{shown}{where} is not an earlier step: "{ref.name}" runs '
                    f'{"as this step" if orders[ref.name] == step_order else "later"}, so it has no output yet.')
        return None
    if ref.root == "trigger" or ref.root in scope:
        return None
    if MAP_SCOPE & scope:
        return (f'"{ref.root}"{where} is not defined: a MAP step\'s inner templates see item, index, '
                'input.<variable>, steps.<earlier step> and trigger.')
    return f'"{ref.root}"{where} is not defined: templates see input.<variable>, steps.<earlier step> and trigger.'


def definition_reference_problems(
    steps: list[dict[str, Any]], variables: list[dict[str, Any]]
) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings): names the templates read that will not exist when they run.

    Unguarded, such a name fails the step with a TemplateError, so it is an error;
    guarded, it is a warning (the template copes with its absence).
    """
    names = [v["name"] for v in variables if isinstance(v, dict) and isinstance(v.get("name"), str)]
    orders = {s["name"]: s.get("order") for s in steps if isinstance(s, dict) and isinstance(s.get("name"), str)}
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        for field, source, kind, scope in step_templates(step):
            seen: set[tuple[str, str | None, bool]] = set()
            for ref in template_references(source, kind=kind):
                if (ref.root, ref.name, ref.guarded) in seen:
                    continue
                seen.add((ref.root, ref.name, ref.guarded))
                message = _reference_message(ref, variables=names, step_order=step.get("order"), orders=orders,
                                             scope=scope)
                if message is None:
                    continue
                if ref.guarded:
                    warnings.append(_problem(index, step, field, message + " It is guarded, so the step copes "
                                                                           "with its absence; check the spelling."))
                else:
                    errors.append(_problem(index, step, field, message))
    return errors, warnings
