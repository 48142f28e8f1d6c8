"""The template language: Jinja2 in an immutable sandbox, checked when a prompt is loaded.

Decisions:
- ``ImmutableSandboxedEnvironment``: templates cannot reach Python internals nor mutate the values they
  are given. ``StrictUndefined`` turns every use of an unknown name into an error instead of an empty
  string. Autoescape is off (the output is a prompt, not HTML); ``keep_trailing_newline`` keeps the text
  exactly as written.
- Multiplying a string or list past ``MAX_SEQUENCE`` items and ``**`` with an exponent over
  ``MAX_EXPONENT`` are refused, so one template cannot exhaust the gateway's memory or CPU.
- At load time every name a template uses must be a declared variable (or a Jinja global such as
  ``range``), and attribute access to names starting with ``_`` is refused outright: both mistakes are
  reported with the file and the message, long before a request hits them.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_SEQUENCE = 1_000_000
MAX_EXPONENT = 1_000


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is larger than {MAX_EXPONENT}")
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
                    raise SecurityError(f"repeating a sequence to more than {MAX_SEQUENCE} items")
        return super().call_binop(context, op, left, right)


ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
GLOBALS = frozenset(ENV.globals)


def check_template(source: str, declared: set[str]) -> list[str]:
    """Problems of one template found without rendering it: syntax, undeclared names, internals."""
    try:
        ast = ENV.parse(source)
    except TemplateSyntaxError as e:
        return [f"template syntax error on its line {e.lineno}: {e.message}"]
    problems = []
    undeclared = sorted(meta.find_undeclared_variables(ast) - declared - GLOBALS)
    for name in undeclared:
        known = ", ".join(sorted(declared)) or "none"
        problems.append(f"uses the undeclared variable {name!r}; declare it under `variables:` (declared: {known})")
    for attr in sorted(_private_attributes(ast)):
        problems.append(f"accesses the internal attribute {attr!r}; templates may not use names starting with '_'")
    return problems


def _private_attributes(ast: nodes.Template) -> set[str]:
    found = {n.attr for n in ast.find_all(nodes.Getattr) if n.attr.startswith("_")}
    for item in ast.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str) and item.arg.value.startswith("_"):
            found.add(item.arg.value)
    for f in ast.find_all(nodes.Filter):
        if f.name == "attr" and f.args and isinstance(f.args[0], nodes.Const) and str(f.args[0].value).startswith("_"):
            found.add(str(f.args[0].value))
    return found
