"""Structured output: when a request asks for JSON (OpenAI ``response_format`` ``json_object`` or
``json_schema``), the answer is parsed and validated, and an invalid answer can be re-asked once with the
validation error (``repair_messages``).

Decisions:

- The answer is parsed with orjson after stripping surrounding whitespace and, if the whole answer is one
  fenced block (```` ```json ````, ```` ```JSON ```` or a bare ```` ``` ````), that fence. Nothing else is
  forgiven: prose around the JSON, two documents, trailing commas, comments, ``NaN`` are invalid. Integers
  beyond 64 bits parse as floats (orjson).
- ``json_object`` mode (no schema) accepts any JSON object and nothing else (OpenAI's contract: an array or
  a bare string is not a JSON object).
- Schemas are validated with jsonschema, Draft 2020-12 unless ``$schema`` names another draft (an unknown
  ``$schema`` also means 2020-12). ``format`` is an annotation, not an assertion (the draft's default).
  ``$ref`` resolves inside the schema and to the bundled meta-schemas only: nothing is ever fetched over the
  network, an unresolvable ``$ref`` makes the schema invalid.
- Validators are compiled once per schema and cached by the schema's canonical JSON (sorted keys) in a
  bounded LRU (``CACHE_SIZE``): the same schema arrives with every request of a route. The tool-call guard
  (``bastion.guards.tools``) shares this cache through ``validate_instance``.
- A broken schema is a verdict (``ok=False``, ``error`` starting ``schema is invalid``), never an exception.
- ``error`` names the failing place as a JSONPath (``$.items[2].price: 'abc' is not of type 'number'``);
  when several things fail, it is jsonschema's ``best_match`` and says how many more there are. Messages
  are cut to ``MAX_MESSAGE`` characters (a failing value can be huge).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import referencing
import referencing.exceptions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

__all__ = ["CACHE_SIZE", "MAX_MESSAGE", "JsonVerdict", "expected_json", "parse_json", "repair_messages",
           "schema_problem", "validate_instance", "validate_json"]

CACHE_SIZE = 256
MAX_MESSAGE = 240
MAX_REPAIR_ERRORS = 5

# Nothing is retrieved: refs resolve inside the schema and to the meta-schemas jsonschema bundles.
_NO_RETRIEVAL = referencing.Registry()

_FENCE = re.compile(r"\A```(?:json|JSON)?[ \t]*\r?\n(?P<body>.*?)\r?\n?[ \t]*```\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class JsonVerdict:
    ok: bool
    error: str | None  # a short message naming where it failed; None when ok
    path: str | None  # JSONPath of the failing value ("$.items[2]"); None when ok, unparsable or bad schema

    @property
    def schema_invalid(self) -> bool:
        """The schema itself is broken: not the model's fault, a repair retry cannot help."""
        return self.error is not None and self.error.startswith("schema is invalid")


_OK = JsonVerdict(True, None, None)


def expected_json(body: dict[str, Any]) -> tuple[bool, dict[str, Any] | None] | None:
    """What an OpenAI chat request asks for: None when it does not ask for JSON (no ``response_format``,
    ``{"type": "text"}``, or a malformed one), ``(True, None)`` for ``json_object``, ``(True, schema)`` for
    ``json_schema`` (``response_format.json_schema.schema``; one without a schema object is malformed)."""
    if not isinstance(body, dict):
        return None
    rf = body.get("response_format")
    if not isinstance(rf, dict):
        return None
    kind = rf.get("type")
    if kind == "json_object":
        return True, None
    if kind == "json_schema":
        js = rf.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else None
        if isinstance(schema, dict):
            return True, schema
    return None


def _short(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unfence(text: str) -> str:
    s = text.strip()
    if s.startswith("```"):
        m = _FENCE.match(s)
        if m:
            return m.group("body").strip()
    return s


def parse_json(text: str) -> tuple[Any, str | None]:
    """(value, None), or (None, error) when ``text`` is not JSON. Whitespace and a single surrounding
    fenced block are tolerated, as in ``validate_json``."""
    try:
        return orjson.loads(_unfence(text)), None
    except orjson.JSONDecodeError as e:
        return None, _short(f"not valid JSON: {e}")
    except (TypeError, ValueError, RecursionError) as e:  # not a str; orjson's own errors are ValueErrors
        return None, _short(f"not valid JSON: {e}")


@lru_cache(maxsize=CACHE_SIZE)
def _compiled(canonical: bytes) -> Validator | str:
    """The validator for a schema given as canonical JSON, or why the schema is invalid."""
    try:
        schema = orjson.loads(canonical)
        cls = validator_for(schema, default=Draft202012Validator)
        cls.check_schema(schema)
        return cls(schema, registry=_NO_RETRIEVAL)
    except Exception as e:  # SchemaError, odd $schema values, bad regexes: all "invalid schema"
        msg = getattr(e, "message", None) or str(e) or type(e).__name__
        where = getattr(e, "json_path", None)
        return _short(f"schema is invalid: {where + ': ' if where and where != '$' else ''}{msg}")


def _validator(schema: dict[str, Any]) -> Validator | str:
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as e:
        return _short(f"schema is invalid: not serialisable as JSON ({e})")
    return _compiled(key)


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a usable JSON schema, or None (for checking configuration at load time)."""
    v = _validator(schema)
    return v if isinstance(v, str) else None


def _describe(e: ValidationError) -> str:
    return f"{e.json_path}: {e.message}"


def _errors(v: Validator, instance: Any) -> Iterator[ValidationError]:
    return v.iter_errors(instance)


def validate_instance(instance: Any, schema: dict[str, Any]) -> JsonVerdict:
    """Validate an already parsed value against ``schema`` with the cached validator."""
    v = _validator(schema)
    if isinstance(v, str):
        return JsonVerdict(False, v, None)
    try:
        errors = list(_errors(v, instance))
    except referencing.exceptions.Unresolvable as e:
        return JsonVerdict(False, _short(f"schema is invalid: unresolvable $ref {getattr(e, 'ref', e)!r}"), None)
    except RecursionError:
        return JsonVerdict(False, "value nested too deeply to validate", "$")
    if not errors:
        return _OK
    best = best_match(errors)
    assert best is not None
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return JsonVerdict(False, _short(_describe(best)) + more, best.json_path)


def validate_json(text: str, schema: dict[str, Any] | None) -> JsonVerdict:
    """Whether the answer ``text`` is the JSON the request asked for: with ``schema`` None (``json_object``
    mode) any JSON object, else a value valid for ``schema``. Surrounding whitespace and a single
    surrounding fenced block (```` ```json ... ``` ````) are tolerated. Never raises."""
    value, err = parse_json(text)
    if err is not None:
        return JsonVerdict(False, err, None)
    if schema is None:
        if isinstance(value, dict):
            return _OK
        return JsonVerdict(False, f"$: expected a JSON object, got {_json_type(value)}", "$")
    return validate_instance(value, schema)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _order(e: ValidationError) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Document order: array indices numerically (``[2]`` before ``[10]``), then the message."""
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in e.absolute_path), e.message


def _all_errors(text: str, schema: dict[str, Any]) -> list[str]:
    """Every validation error of ``text`` (at most ``MAX_REPAIR_ERRORS``), for the repair message."""
    value, err = parse_json(text)
    v = _validator(schema)
    if err is not None or isinstance(v, str):
        return []
    try:
        errors = sorted(_errors(v, value), key=_order)
    except (referencing.exceptions.Unresolvable, RecursionError):
        return []
    return [_short(_describe(e)) for e in errors[:MAX_REPAIR_ERRORS]]


def repair_messages(bad_output: str, verdict: JsonVerdict, schema: dict[str, Any] | None) -> list[dict[str, str]]:
    """The two OpenAI-format messages appended to the conversation for the one repair retry: the model's
    bad answer (as the assistant), then a user turn that says exactly what was wrong (every schema error,
    up to ``MAX_REPAIR_ERRORS``) and asks for only the corrected JSON. An empty answer is replaced by a
    placeholder (Anthropic rejects empty assistant turns). Raises ValueError for an ``ok`` verdict."""
    if verdict.ok:
        raise ValueError("repair_messages: the verdict is ok, there is nothing to repair")
    problems = _all_errors(bad_output, schema) if schema is not None else []
    if not problems:
        problems = [verdict.error or "the answer is not valid JSON"]
    if len(problems) == 1:
        what = f"Your previous answer is not valid: {problems[0]}."
    else:
        what = "Your previous answer is not valid:\n" + "\n".join(f"- {p}" for p in problems)
    target = ("a single JSON object" if schema is None
              else "a single JSON value that matches the required JSON schema")
    ask = (f"{what}\n\nReply with only the corrected JSON: {target}, with no explanation, no markdown and "
           "no code fences.")
    return [
        {"role": "assistant", "content": bad_output if bad_output.strip() else "(empty answer)"},
        {"role": "user", "content": ask},
    ]
