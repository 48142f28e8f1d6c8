"""Rendering a prompt version: check the variables against their declaration, then fill the templates.

Decisions:
- Variables are checked strictly, all problems reported at once: a missing required variable, a variable
  that is not declared, a value of the wrong type (booleans are not numbers; no string-to-number
  coercion: the gateway receives JSON and passes its types through) or outside ``enum``.
- A declared variable that is not given takes its ``default``; an optional one without a default is
  ``None``, so templates can say ``{% if order_id %}``.
- Any failure while rendering (a sandbox violation, an operation on the wrong type) is a
  ``PromptTemplateError`` naming the prompt and the message: never a 500 with a traceback.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Template
from jinja2.sandbox import SecurityError

from bastion.jsontypes import json_type, with_article

from .errors import PromptRenderError, PromptTemplateError
from .spec import type_matches
from .template import ENV


@lru_cache(maxsize=2048)
def compiled(source: str) -> Template:
    return ENV.from_string(source)


def bind(spec: dict[str, Any], variables: Any, ref: str) -> dict[str, Any]:
    """The template context for ``variables``; PromptRenderError naming every bad variable."""
    if not isinstance(variables, dict):
        raise PromptRenderError(f"prompt {ref}: variables must be an object of name to value, "
                                f"got {json_type(variables)}", param="variables")
    declared: dict[str, dict[str, Any]] = spec.get("variables") or {}
    problems = []
    values: dict[str, Any] = {}
    for var, decl in declared.items():
        kind = decl["type"]
        if var not in variables:
            if "default" in decl:
                values[var] = decl["default"]
            elif decl.get("required", True):
                problems.append(f"missing variable {var!r} ({kind})")
            else:
                values[var] = None
            continue
        value = variables[var]
        if not type_matches(kind, value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            problems.append(f"variable {var!r} must be {with_article(kind)}, got {with_article(json_type(value))} ({shown})")
        elif decl.get("enum") is not None and value not in decl["enum"]:
            problems.append(f"variable {var!r} must be one of {', '.join(map(repr, decl['enum']))}; got {value!r}")
        else:
            values[var] = value
    for var in variables:
        if var not in declared:
            known = ", ".join(declared) or "none"
            problems.append(f"unknown variable {var!r} (declared: {known})")
    if problems:
        raise PromptRenderError(f"prompt {ref}: " + "; ".join(problems), param="variables")
    return values


def render_messages(spec: dict[str, Any], values: dict[str, Any], ref: str) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(spec["messages"]):
        try:
            content = compiled(m["content"]).render(values)
        except SecurityError as e:
            raise PromptTemplateError(f"prompt {ref}: message {i} did something the template sandbox forbids: {e}"
                                      ) from None
        except Exception as e:  # noqa: BLE001 - a template error must never escape as a 500
            raise PromptTemplateError(f"prompt {ref}: message {i} failed to render: {type(e).__name__}: {e}"
                                      ) from None
        message = {"role": m["role"], "content": content}
        if "name" in m:
            message["name"] = m["name"]
        out.append(message)
    return out


