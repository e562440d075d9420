"""The Jinja2 environment playbook templates render in: a sandbox with hard limits.

On top of Jinja's immutable sandbox (no ``_`` attributes, no methods that change
a value) it keeps every render within the limits in limits.py: operators, method
and filter calls, ``~`` and loops all pass through a check, and undefined names
say what exists instead (``contact has no field 'firstname'; did you mean first_name?``).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache, wraps
from typing import Any

from jinja2 import StrictUndefined, Template, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from connector.playbooks import limits

NAMES = ("deal", "company", "contact", "owner", "playbook", "dates")
_OUTSIDE = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)
# The parameter of a filter that sets how much it builds.
_WIDTH_PARAMETER = {"center": "width", "wordwrap": "width", "batch": "linecount", "slice": "slices"}
_WIDE_STR_METHODS = ("center", "ljust", "rjust", "zfill")


def nearest(name: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``name`` (a typo's likely meaning), or None when none is close."""
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class Fields(dict[str, Any]):
    """The fields of one template name (``contact``, ``deal.properties``…), named in errors."""

    __slots__ = ("_offboard_label",)

    def __init__(self, label: str, values: dict[str, Any]) -> None:
        super().__init__(values)
        self._offboard_label = label

    def missing_field(self, name: str) -> str:
        guess = nearest(name, self)
        text = f"{self._offboard_label} has no field {name!r}"
        if guess:
            text += f"; did you mean {guess}?"
        return text + f" (fields: {', '.join(self) or 'none'})"


class _Undefined(StrictUndefined):
    """Undefined names and fields are errors that say what exists."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        owner, name = self._undefined_obj, self._undefined_name
        if self._undefined_hint or not isinstance(name, str):
            return super()._undefined_message
        if isinstance(owner, Fields):
            return owner.missing_field(name)
        if owner is missing:
            guess = nearest(name, NAMES)
            hint = f"; did you mean {guess}?" if guess else ""
            names = ", ".join(NAMES)
            return f"{name!r} is undefined{hint} (templates may use: {names}; see docs/playbooks.md)"
        return super()._undefined_message


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with every costly operation checked against the render's budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        limits.current().tick()
        limits.binop(operator, left, right)
        return limits.current().charge(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        limits.current().tick()
        _check_str_method(__obj, args, kwargs)
        return limits.current().charge(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        template = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            limits.brace_format(template)
            return str(limits.current().charge(wrapped(*args, **kwargs)))

        return checked


def _check_str_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(method, "__name__", "")
    values = [*args, *kwargs.values()]
    if name in _WIDE_STR_METHODS and values:
        limits.width(values[0])
    elif name == "expandtabs":
        size = values[0] if values and isinstance(values[0], int) else 8
        limits.width(size, "a tab size")
        limits.estimate(len(owner) + owner.count("\t") * max(size, 0))
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = args[2] if len(args) > 2 and isinstance(args[2], int) else -1
        limits.replaced(owner, args[0], args[1], count)
    elif name == "join" and args:
        limits.joined(args[0], owner)


def _guarded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter that checks what it is asked to build, and pays for what it built."""
    signature = inspect.signature(function)

    @wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = limits.current()
        budget.tick()
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return function(*args, **kwargs)  # the filter raises its own, clearer error
        _check_filter(name, bound.arguments)
        return budget.charge(function(*bound.args, **bound.kwargs))

    return guarded


def _check_filter(name: str, arguments: dict[str, Any]) -> None:
    if name in _WIDTH_PARAMETER and _WIDTH_PARAMETER[name] in arguments:
        limits.width(arguments[_WIDTH_PARAMETER[name]])
    text = arguments.get("s", arguments.get("value"))
    if name == "indent" and isinstance(text, str):
        limits.indented(text, arguments.get("width", 4))
    elif name == "format" and isinstance(text, str):
        limits.percent_format(text)
    elif name == "replace" and isinstance(text, str):
        old, new = str(arguments.get("old", "")), str(arguments.get("new", ""))
        count = arguments.get("count")
        limits.replaced(text, old, new, count if isinstance(count, int) else -1)
    elif name == "join" and "value" in arguments:
        arguments["value"] = limits.joined(arguments["value"], arguments.get("d", ""))


def _counted(items: Any, literal: int = 0) -> Iterator[Any]:
    """A loop's items, each paid for as one iteration plus the loop body's literal text."""
    budget = limits.current()
    for item in items:
        budget.loop(literal)
        yield item


def _built(value: Any) -> Any:
    return limits.current().charge(value)


def _finalize(value: Any) -> Any:
    limits.current().spend(len(value) if isinstance(value, str) else 1)
    return value


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    from connector.playbooks.templates import FILTERS

    env = _Sandbox(undefined=_Undefined, autoescape=False, keep_trailing_newline=False, finalize=_finalize)
    env.globals.clear()  # only the documented names: no range, lipsum, cycler, joiner, namespace, dict
    env.filters.update(FILTERS)
    env.filters = {name: _guarded(name, function) for name, function in env.filters.items()}
    env.filters["_counted"] = _counted
    env.filters["_built"] = _built
    return env


@lru_cache(maxsize=4096)
def compiled(source: str) -> Template:
    """Each playbook text is compiled once per process, not once per deal.

    SecurityError when the text is too long or reaches outside itself:
    ``include``, ``import``, ``extends`` or ``self`` (the template's own object).
    """
    if len(source) > limits.MAX_SOURCE:
        raise limits.TemplateLimit(f"a template may be at most {limits.MAX_SOURCE:,} characters")
    env = environment()
    tree = env.parse(source)
    if any(True for _ in tree.find_all(_OUTSIDE)):
        raise SecurityError("templates cannot include, import or extend other templates")
    if any(name.name == "self" for name in tree.find_all(nodes.Name)):
        raise SecurityError("'self' is not available in playbook templates")
    _bound(tree, env)
    return env.from_string(tree)


def _bound(tree: nodes.Template, env: ImmutableSandboxedEnvironment) -> None:
    """Route every loop and every ``~`` through the render's budget."""
    for loop in list(tree.find_all(nodes.For)):
        literal = sum(len(data.data) for body in loop.body for data in body.find_all(nodes.TemplateData))
        size = nodes.Const(literal, lineno=loop.lineno)
        loop.iter = nodes.Filter(loop.iter, "_counted", [size], [], None, None, lineno=loop.lineno)
    for parent in list(tree.find_all(nodes.Node)):
        for field in parent.fields:
            child = getattr(parent, field, None)
            if isinstance(child, nodes.Concat):
                setattr(parent, field, _built_node(child))
            elif isinstance(child, list):
                setattr(parent, field, [_built_node(c) if isinstance(c, nodes.Concat) else c for c in child])
    tree.set_environment(env)


def _built_node(node: nodes.Concat) -> nodes.Filter:
    return nodes.Filter(node, "_built", [], [], None, None, lineno=node.lineno)
