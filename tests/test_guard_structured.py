"""Structured-output guard: what a request asks for, JSON / JSON-schema validation of the answer, the
validator cache, and the repair retry's messages."""

from __future__ import annotations

import json
import urllib.request

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.guards import structured
from bastion.guards.structured import (
    CACHE_SIZE,
    JsonVerdict,
    expected_json,
    repair_messages,
    schema_problem,
    validate_instance,
    validate_json,
)

ITEMS = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
                "required": ["name", "price"],
            },
        },
    },
    "required": ["items"],
}


def _schema_rf(schema: object, **extra: object) -> dict:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, **extra}}}


# --- expected_json ---------------------------------------------------------------------------------------

def test_expected_json_no_response_format() -> None:
    assert expected_json({"messages": []}) is None


def test_expected_json_text() -> None:
    assert expected_json({"response_format": {"type": "text"}}) is None


def test_expected_json_object() -> None:
    assert expected_json({"response_format": {"type": "json_object"}}) == (True, None)


def test_expected_json_schema() -> None:
    assert expected_json(_schema_rf(ITEMS, strict=True)) == (True, ITEMS)
    assert expected_json(_schema_rf(ITEMS, strict=False)) == (True, ITEMS)


@pytest.mark.parametrize("body", [
    {"response_format": "json_object"},
    {"response_format": None},
    {"response_format": ["json_object"]},
    {"response_format": {}},
    {"response_format": {"type": "yaml"}},
    {"response_format": {"type": "json_schema"}},
    {"response_format": {"type": "json_schema", "json_schema": "nope"}},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
    _schema_rf("not a schema"),
    _schema_rf(["type", "object"]),
])
def test_expected_json_malformed_is_ignored(body: dict) -> None:
    assert expected_json(body) is None


def test_expected_json_body_not_a_dict() -> None:
    assert expected_json([]) is None  # type: ignore[arg-type]


# --- validate_json: parsing --------------------------------------------------------------------------------

def test_valid_object_without_schema() -> None:
    assert validate_json('{"a": 1}', None) == JsonVerdict(True, None, None)


def test_surrounding_whitespace_is_tolerated() -> None:
    assert validate_json('\n\n  {"a": 1}  \n', None).ok


@pytest.mark.parametrize("text", [
    '```json\n{"a": 1}\n```',
    '```JSON\n{"a": 1}\n```',
    '```\n{"a": 1}\n```',
    '  \n```json\n{\n  "a": 1\n}\n```\n ',
    '```json\r\n{"a": 1}\r\n```',
    '```json\n{"a": 1}```',
])
def test_single_fenced_block_is_tolerated(text: str) -> None:
    assert validate_json(text, None).ok
    assert validate_json(text, {"type": "object", "required": ["a"]}).ok


@pytest.mark.parametrize("text", [
    'Here you go:\n```json\n{"a": 1}\n```',
    '```json\n{"a": 1}\n```\nHope this helps!',
    '```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```',
    '```python\n{"a": 1}\n```',
    'Sure! {"a": 1}',
    '{"a": 1} {"b": 2}',
])
def test_anything_more_than_one_fence_is_invalid(text: str) -> None:
    v = validate_json(text, None)
    assert not v.ok
    assert v.error is not None and v.error.startswith("not valid JSON")
    assert v.path is None


def test_invalid_json_names_the_position() -> None:
    v = validate_json('{"a": 1 "b": 2}', None)
    assert not v.ok and v.path is None
    assert v.error is not None
    assert v.error.startswith("not valid JSON: ")
    assert "line 1 column 9" in v.error


@pytest.mark.parametrize("text", ["", "   ", "\n", "{", '{"a": 1,}', "{'a': 1}", '{"a": NaN}', "nul",
                                  '{"a": 1} // comment', "\ud800"])
def test_not_json(text: str) -> None:
    v = validate_json(text, None)
    assert not v.ok
    assert v.error is not None and v.error.startswith("not valid JSON")


def test_json_too_deep_is_an_error_not_an_exception() -> None:
    v = validate_json("[" * 5000 + "]" * 5000, None)
    assert not v.ok and v.error is not None and "not valid JSON" in v.error


def test_big_integers_parse() -> None:
    assert validate_json('{"n": 123456789012345678901234567890}', {"type": "object"}).ok


# --- json_object mode ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "got"), [
    ("[1, 2]", "an array"),
    ('"just a string"', "a string"),
    ("42", "a number"),
    ("4.2", "a number"),
    ("true", "a boolean"),
    ("null", "null"),
])
def test_json_object_mode_requires_an_object(text: str, got: str) -> None:
    v = validate_json(text, None)
    assert v == JsonVerdict(False, f"$: expected a JSON object, got {got}", "$")


def test_json_object_mode_accepts_any_object() -> None:
    assert validate_json("{}", None).ok
    assert validate_json('{"deep": {"x": [1, {"y": null}]}}', None).ok


# --- schema validation -----------------------------------------------------------------------------------

def test_schema_valid_answer() -> None:
    assert validate_json('{"items": [{"name": "a", "price": 1.5}]}', ITEMS).ok


def test_schema_violation_names_the_path() -> None:
    text = '{"items": [{"name": "a", "price": 1}, {"name": "b", "price": 2}, {"name": "c", "price": "abc"}]}'
    v = validate_json(text, ITEMS)
    assert v == JsonVerdict(False, "$.items[2].price: 'abc' is not of type 'number'", "$.items[2].price")


def test_missing_required_property() -> None:
    v = validate_json('{"items": [{"name": "a"}]}', ITEMS)
    assert not v.ok
    assert v.path == "$.items[0]"
    assert v.error == "$.items[0]: 'price' is a required property"


def test_root_violation() -> None:
    v = validate_json("[]", ITEMS)
    assert v.path == "$"
    assert v.error == "$: [] is not of type 'object'"


def test_several_errors_are_counted() -> None:
    v = validate_json('{"items": [{"name": 1, "price": "x"}, {}]}', ITEMS)
    assert not v.ok
    assert v.error is not None and "more error" in v.error


def test_long_values_are_cut() -> None:
    v = validate_json('{"items": "' + "x" * 5000 + '"}', ITEMS)
    assert not v.ok and v.error is not None
    assert len(v.error) <= structured.MAX_MESSAGE
    assert v.error.endswith("…")


def test_format_is_an_annotation() -> None:
    assert validate_json('"not an e-mail"', {"type": "string", "format": "email"}).ok


def test_local_refs_resolve() -> None:
    schema = {"$defs": {"n": {"type": "integer"}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}}
    assert validate_json('{"a": 1}', schema).ok
    v = validate_json('{"a": "x"}', schema)
    assert v.path == "$.a" and v.error == "$.a: 'x' is not of type 'integer'"


def test_recursive_schema_on_deep_value_never_raises() -> None:
    schema = {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    text = "[" * 1000 + "]" * 1000
    v = validate_json(text, schema)
    assert isinstance(v, JsonVerdict)
    assert v.ok or v.error is not None


def test_draft_2020_12_by_default() -> None:
    # prefixItems exists in 2020-12 only; items-as-array is a draft-07 form, not a valid 2020-12 schema
    assert not validate_json("[1, 2]", {"prefixItems": [{"type": "string"}]}).ok
    assert validate_json("[1, 2]", {"items": [{"type": "string"}]}).schema_invalid


def test_schema_keyword_selects_the_draft() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "integer"}]}
    assert validate_json("[1, 2]", schema).ok
    v = validate_json('["a"]', schema)
    assert not v.ok and v.path == "$[0]"


def test_unknown_schema_uri_means_2020_12() -> None:
    schema = {"$schema": "https://example.invalid/my-draft", "type": "object"}
    assert validate_json("{}", schema).ok
    assert not validate_json("[]", schema).ok


# --- broken schemas ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", [
    {"type": "nope"},
    {"type": "object", "properties": {"a": {"pattern": "("}}},
    {"type": "object", "required": "a"},
    {"minLength": -1},
    {"$schema": ["not", "a", "uri"]},
    {"type": {1, 2}},  # not serialisable as JSON
])
def test_broken_schema_is_a_verdict(schema: dict) -> None:
    v = validate_json("{}", schema)
    assert not v.ok
    assert v.error is not None and v.error.startswith("schema is invalid")
    assert v.path is None
    assert v.schema_invalid
    assert schema_problem(schema) == v.error


def test_answer_errors_are_not_schema_errors() -> None:
    assert not validate_json("[]", None).schema_invalid
    assert not validate_json("{", None).schema_invalid
    assert not validate_json("{}", None).schema_invalid


def test_remote_refs_are_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*_a: object, **_k: object) -> None:
        raise AssertionError("a schema $ref went to the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    v = validate_json('{"a": 1}', {"properties": {"a": {"$ref": "https://example.com/schemas/a.json"}}})
    assert not v.ok
    assert v.schema_invalid
    assert v.error is not None and "example.com/schemas/a.json" in v.error


def test_meta_schema_refs_resolve_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda *_a, **_k: (_ for _ in ()).throw(AssertionError()))
    schema = {"$ref": "https://json-schema.org/draft/2020-12/schema"}
    assert validate_json('{"type": "object"}', schema).ok


def test_schema_problem_of_a_good_schema() -> None:
    assert schema_problem(ITEMS) is None


# --- the validator cache ---------------------------------------------------------------------------------

def test_validators_are_compiled_once_per_schema() -> None:
    structured._compiled.cache_clear()
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    reordered = {"properties": {"a": {"type": "integer"}}, "required": ["a"], "type": "object"}
    for _ in range(5):
        validate_json('{"a": 1}', schema)
    validate_json('{"a": 1}', reordered)
    info = structured._compiled.cache_info()
    assert info.misses == 1
    assert info.hits == 5


def test_cache_is_bounded() -> None:
    structured._compiled.cache_clear()
    for i in range(CACHE_SIZE + 20):
        validate_json("1", {"minimum": i})
    info = structured._compiled.cache_info()
    assert info.maxsize == CACHE_SIZE
    assert info.currsize == CACHE_SIZE


def test_broken_schemas_are_cached_too() -> None:
    structured._compiled.cache_clear()
    validate_json("{}", {"type": "nope"})
    validate_json("{}", {"type": "nope"})
    assert structured._compiled.cache_info().misses == 1


def test_validate_instance() -> None:
    assert validate_instance({"items": []}, ITEMS).ok
    v = validate_instance({"items": [{"name": "a", "price": None}]}, ITEMS)
    assert v.path == "$.items[0].price"


# --- repair messages ---------------------------------------------------------------------------------------

def test_repair_messages_shape() -> None:
    bad = '{"items": [{"name": "a", "price": "abc"}]}'
    v = validate_json(bad, ITEMS)
    msgs = repair_messages(bad, v, ITEMS)
    assert [m["role"] for m in msgs] == ["assistant", "user"]
    assert msgs[0]["content"] == bad
    ask = msgs[1]["content"]
    assert "$.items[0].price: 'abc' is not of type 'number'" in ask
    assert "only the corrected JSON" in ask
    assert "schema" in ask
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in msgs)


def test_repair_messages_list_every_schema_error_in_document_order() -> None:
    bad = orjson.dumps({"items": [{"name": "x", "price": str(i)} for i in range(12)]}).decode()
    v = validate_json(bad, ITEMS)
    ask = repair_messages(bad, v, ITEMS)[1]["content"]
    lines = [ln for ln in ask.splitlines() if ln.startswith("- ")]
    assert len(lines) == structured.MAX_REPAIR_ERRORS
    assert lines[0].startswith("- $.items[0].price")
    assert lines[2].startswith("- $.items[2].price")  # [2] before [10]


def test_repair_messages_for_invalid_json() -> None:
    bad = '{"a": 1 "b": 2}'
    v = validate_json(bad, None)
    msgs = repair_messages(bad, v, None)
    assert msgs[0]["content"] == bad
    assert v.error is not None and v.error in msgs[1]["content"]
    assert "JSON object" in msgs[1]["content"]


def test_repair_messages_for_not_an_object() -> None:
    v = validate_json("[1]", None)
    ask = repair_messages("[1]", v, None)[1]["content"]
    assert "expected a JSON object, got an array" in ask


def test_repair_messages_for_invalid_json_with_schema() -> None:
    v = validate_json("nope", ITEMS)
    ask = repair_messages("nope", v, ITEMS)[1]["content"]
    assert "not valid JSON" in ask


def test_repair_messages_empty_answer_gets_a_placeholder() -> None:
    v = validate_json("", None)
    msgs = repair_messages("", v, None)
    assert msgs[0]["content"].strip()


def test_repair_messages_refuse_an_ok_verdict() -> None:
    with pytest.raises(ValueError):
        repair_messages("{}", validate_json("{}", None), None)


# --- never raises ------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text())
def test_validate_json_never_raises_on_text(text: str) -> None:
    for schema in (None, ITEMS, {"type": "nope"}):
        v = validate_json(text, schema)
        assert isinstance(v, JsonVerdict)
        assert v.ok == (v.error is None)


_json_chars = st.text(alphabet='{}[]":,0123456789.-eE truefalsn\\`json\n', max_size=80)


@settings(max_examples=300, deadline=None)
@given(_json_chars)
def test_validate_json_never_raises_on_json_like_text(text: str) -> None:
    for schema in (None, ITEMS, {"type": "array", "items": {"type": "number"}}):
        v = validate_json(text, schema)
        assert v.ok == (v.error is None)
        if not v.ok:
            assert repair_messages(text, v, schema)[1]["role"] == "user"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_json_values)
def test_any_serialised_value_parses(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert validate_json(text, {}).ok
    assert validate_json(f"```json\n{text}\n```", {}).ok
    assert validate_json(text, None).ok == isinstance(value, dict)
