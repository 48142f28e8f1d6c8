"""The JSON type of a Python value, named as JSON Schema names it, for messages that say what a caller sent
("must be an object, got array")."""

from __future__ import annotations

from typing import Any

_KINDS: tuple[tuple[str, Any], ...] = (
    ("boolean", bool), ("integer", int), ("number", float), ("string", str), ("array", list | tuple),
    ("object", dict), ("null", type(None)),
)


def json_type(value: Any) -> str:
    """``boolean``, ``integer``, ``number``, ``string``, ``array``, ``object`` or ``null`` (a bool is not an
    integer); the Python type's name for anything else."""
    for kind, types in _KINDS:
        if isinstance(value, types):
            return kind
    return type(value).__name__


def with_article(kind: str) -> str:
    """``an integer``, ``a string``."""
    return ("an " if kind[0] in "aeiou" else "a ") + kind
