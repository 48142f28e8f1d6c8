"""Shape limits of a client's JSON body: nesting depth and element count, checked as part of parsing.

orjson reads up to 1,024 levels but writes at most 254, so a body nested a few hundred levels deep parses and
then cannot be logged; a body of millions of tiny elements costs every later walk over it (guards, token
counting, the log). ``check_shape`` walks the parsed value once, iteratively (no recursion limit to hit),
and stops at the first limit it crosses, so its cost is bounded by the limits, not by the body.
"""

from __future__ import annotations

from typing import Any

from bastion.errors import InvalidRequest


class BodyTooComplex(InvalidRequest):
    code = "request_too_complex"


def check_shape(value: Any, *, max_depth: int, max_elements: int) -> None:
    """Raise BodyTooComplex if ``value`` nests deeper than ``max_depth`` containers (the top-level object
    is depth 1) or holds more than ``max_elements`` array items and object members in all."""
    if type(value) is not dict and type(value) is not list:
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    count = 0
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        count += len(v)
        if count > max_elements:
            raise BodyTooComplex(
                f"the request body holds more than {max_elements:,} JSON array items and object members; "
                "the limit is set by server.max_json_elements"
            )
        items = v.values() if type(v) is dict else v
        child = depth + 1
        for x in items:
            t = type(x)
            if t is dict or t is list:
                if child > max_depth:
                    raise BodyTooComplex(
                        f"the request body nests JSON deeper than {max_depth} levels; the limit is set by "
                        "server.max_json_depth (flatten the value, or send it as a string)"
                    )
                push((x, child))
