"""Assertions on structured answers: is-json and json-schema."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from ..model import Answer, Case, Check
from .base import Assertion, clip, register

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n?```\s*$", re.S)


def parse_json(text: str, allow_fence: bool) -> tuple[Any, str | None]:
    """(value, None) or (None, why it is not JSON). A Markdown ```json fence is stripped if allowed."""
    if allow_fence:
        m = _FENCE.match(text)
        if m:
            text = m.group(1)
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e.msg} at line {e.lineno} column {e.colno}): {clip(text)!r}"


@register
class IsJson(Assertion):
    """The answer parses as JSON (``object: true``: a JSON object; ``allow_fence``: accept a ```json block)."""

    type = "is-json"
    options = {"object": {"type": "boolean"}, "allow_fence": {"type": "boolean"}}
    category = "format"

    def check(self, answer: Answer, case: Case) -> Check:
        value, why = parse_json(answer.text, bool(self.spec.get("allow_fence", False)))
        if why:
            return self.fail(why)
        if self.spec.get("object") and not isinstance(value, dict):
            return self.fail(f"JSON {type(value).__name__}, not an object")
        return self.ok()


@register
class JsonSchema(Assertion):
    """The answer is JSON valid for ``schema`` (JSON Schema, draft 2020-12 unless ``$schema`` says otherwise)."""

    type = "json-schema"
    options = {"schema": {"type": "object"}, "allow_fence": {"type": "boolean"}}
    required = ("schema",)
    category = "format"

    def setup(self) -> None:
        cls = jsonschema.validators.validator_for(self.spec["schema"], default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(self.spec["schema"])
        except jsonschema.SchemaError as e:
            raise ValueError(f"invalid JSON schema: {e.message}") from None
        self.validator = cls(self.spec["schema"], format_checker=cls.FORMAT_CHECKER)

    def check(self, answer: Answer, case: Case) -> Check:
        value, why = parse_json(answer.text, bool(self.spec.get("allow_fence", False)))
        if why:
            return self.fail(why)
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            at = "/".join(str(p) for p in e.absolute_path) or "(root)"
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            return self.fail(f"{at}: {e.message}{more}")
        return self.ok()
