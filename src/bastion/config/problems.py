"""Located problems for model validators: each problem at its own key path, all reported at once.

A ``ValueError`` raised by a model validator lands on the model's own location, and several problems
joined into one message land on one line. ``raise_problems`` raises a pydantic ``ValidationError`` with
one error per problem, each with its ``loc`` relative to the model being validated; pydantic prefixes
the model's own location, so ``bastion.config.loader`` can map every problem to the line of its key.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

Loc = tuple[str | int, ...]


def raise_problems(title: str, problems: list[tuple[Loc, str]], value: Any) -> None:
    """Raise one ValidationError holding every (relative key path, message) problem; nothing if none."""
    if not problems:
        return
    raise ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError("config_problem", "{problem}", {"problem": msg}), loc=loc,
                         input=value)
        for loc, msg in problems
    ])
