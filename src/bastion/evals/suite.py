"""Load an eval suite (YAML) and its cases file (JSONL or CSV); every problem reported with file, key path, line."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema

from bastion import yamlfile

from .assertions import REGISTRY, Assertion
from .model import Case, Gate, Suite, SuiteError, Variant

_MESSAGE = {"type": "object", "required": ["role"],
            "properties": {"role": {"enum": ["system", "developer", "user", "assistant", "tool"]}}}
_ASSERTS = {"type": "array", "items": {"type": "object", "required": ["type"]}}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}
CASE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "id": {"type": ["string", "integer"]}, "vars": {"type": "object"},
        "messages": {"type": "array", "items": _MESSAGE}, "input": {"type": "string"},
        "reference": {"type": "string"}, "context": {"type": "string"}, "assert": _ASSERTS,
        "metadata": {"type": "object"},
    },
}
SUITE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["variants"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1}, "description": {"type": "string"},
        "samples": {"type": "integer", "minimum": 1, "maximum": 1000}, "judge_model": {"type": "string"},
        "variants": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "pattern": r"^[\w.:@/+-]+$"}, "prompt": {"type": "string"},
                           "model": {"type": "string"}, "params": {"type": "object"},
                           "messages": {"type": "array", "items": _MESSAGE}}}},
        "defaults": {"type": "object", "additionalProperties": False, "properties": {"assert": _ASSERTS}},
        "cases": {"type": "array", "items": CASE_SCHEMA},
        "cases_file": {"type": "string"},
        "gate": {"type": "object", "additionalProperties": False, "properties": {
            "min_pass_rate": _UNIT, "min_lower_bound": _UNIT, "max_regression": _UNIT,
            "baseline": {"type": "string"}, "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}}},
    },
}
RESERVED_PARAMS = ("model", "messages", "prompt", "stream", "n")
CSV_FIELDS = ("id", "input", "reference", "context")


class Problems:
    """Collects problems as ``file:line: key.path: message``."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, source: str, lines: dict[tuple[str, ...], int], path: Iterable[Any], msg: str) -> None:
        loc = tuple(str(p) for p in path)
        probe, line = loc, None
        while True:
            if probe in lines:
                line = lines[probe]
                break
            if not probe:
                break
            probe = probe[:-1]
        where = f"{source}:{line}" if line else source
        self.items.append(f"{where}: {'.'.join(loc) or '(top level)'}: {msg}")


def _schema_errors(value: Any, schema: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    out = []
    for e in jsonschema.Draft202012Validator(schema).iter_errors(value):
        path = tuple(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = e.schema.get("properties", {})
            for key in (k for k in e.instance if k not in known):
                out.append(((*path, key), f"unknown key (known: {', '.join(known)}; see docs/evals.md)"))
            continue
        out.append((path, e.message))
    return out


def build_assertion(spec: dict[str, Any], base_dir: Path) -> Assertion:
    """Validate one assertion spec against its type's schema and build it (ValueError with a message)."""
    kind = spec.get("type")
    cls = REGISTRY.get(kind) if isinstance(kind, str) else None  # a list or mapping: unknown, not a crash
    if cls is None:
        raise ValueError(f"unknown assertion type {kind!r} (known: {', '.join(sorted(REGISTRY))})")
    errs = _schema_errors(spec, cls.schema())
    if errs:
        path, msg = errs[0]
        raise ValueError(f"{cls.type}: {'.'.join(map(str, path)) + ': ' if path else ''}{msg}")
    return cls(spec, base_dir)


def _assertions(specs: list[dict[str, Any]], base: Path, where: tuple[Any, ...], problems: Problems,
                source: str, lines: dict[tuple[str, ...], int]) -> list[Assertion]:
    out = []
    for i, spec in enumerate(specs):
        try:
            out.append(build_assertion(spec, base))
        except ValueError as e:
            problems.add(source, lines, (*where, i), str(e))
    return out


def _case(raw: dict[str, Any], index: int, where: tuple[Any, ...], defaults: list[Assertion], base: Path,
          problems: Problems, source: str, lines: dict[tuple[str, ...], int]) -> Case | None:
    for path, msg in _schema_errors(raw, CASE_SCHEMA):
        problems.add(source, lines, (*where, *path), msg)
        return None
    messages = list(raw.get("messages", []))
    if "input" in raw:
        messages.append({"role": "user", "content": raw["input"]})
    line = lines.get(tuple(map(str, where)))
    return Case(
        id=str(raw.get("id", f"case-{index + 1}")), vars=dict(raw.get("vars", {})), messages=messages,
        reference=raw.get("reference"), context=raw.get("context"),
        assertions=defaults + _assertions(raw.get("assert", []), base, (*where, "assert"), problems, source, lines),
        metadata=dict(raw.get("metadata", {})), where=f"{source}:{line}" if line else source,
    )


def read_case_rows(path: Path, problems: Problems) -> list[tuple[dict[str, Any], int]]:
    """(raw case, line) for each case in a JSONL or CSV file."""
    rows: list[tuple[dict[str, Any], int]] = []
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        for row in reader:
            raw: dict[str, Any] = {k: v for k, v in row.items() if k in CSV_FIELDS and v not in (None, "")}
            raw_vars = {k: v for k, v in row.items() if k and k not in (*CSV_FIELDS, "assert")}
            if raw_vars:
                raw["vars"] = raw_vars
            if row.get("assert"):
                try:
                    raw["assert"] = json.loads(row["assert"])
                except json.JSONDecodeError as e:
                    problems.add(str(path), {(): reader.line_num}, ["assert"], f"not JSON ({e.msg})")
                    continue
            rows.append((raw, reader.line_num))
        return rows
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            problems.add(str(path), {(): n}, [], f"not JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(raw, dict):
            problems.add(str(path), {(): n}, [], "each line must be a JSON object (a case)")
            continue
        rows.append((raw, n))
    return rows


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    try:
        return yamlfile.load(text, source)
    except yamlfile.YamlError as e:
        raise SuiteError(e.problems) from None


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite; raise SuiteError listing every problem with file, key path and line."""
    p = Path(path)
    src = str(p)
    if not p.is_file():
        raise SuiteError([f"{src}: suite file not found"])
    data, lines = _parse_yaml(p.read_text(encoding="utf-8"), src)
    if not isinstance(data, dict):
        raise SuiteError([f"{src}:1: a suite is a mapping with variants and cases (see docs/evals.md)"])
    problems = Problems()
    for path_, msg in _schema_errors(data, SUITE_SCHEMA):
        if not path_ or path_[0] not in ("cases",):  # cases are checked one by one below
            problems.add(src, lines, path_, msg)
    if problems.items:
        raise SuiteError(problems.items)
    base = p.parent
    defaults = _assertions(data.get("defaults", {}).get("assert", []), base, ("defaults", "assert"), problems, src, lines)
    cases = [c for i, raw in enumerate(data.get("cases", []))
             if (c := _case(raw, i, ("cases", i), defaults, base, problems, src, lines)) is not None]
    cases_file = None
    if "cases_file" in data:
        cases_file = base / data["cases_file"]
        if not cases_file.is_file():
            problems.add(src, lines, ["cases_file"], f"{cases_file} not found")
        else:
            offset = len(cases)
            for k, (raw, line) in enumerate(read_case_rows(cases_file, problems)):
                c = _case(raw, offset + k, (), defaults, base, problems, str(cases_file), {(): line})
                if c is not None:
                    cases.append(c)
    variants = [Variant(name=v["name"], prompt=v.get("prompt"), model=v.get("model"), params=dict(v.get("params", {})),
                        messages=list(v.get("messages", []))) for v in data["variants"]]
    _check_consistency(data, variants, cases, problems, src, lines)
    if problems.items:
        raise SuiteError(problems.items)
    g = data.get("gate", {})
    gate = Gate(**g)
    return Suite(name=data.get("name", p.stem), path=p, variants=variants, cases=cases,
                 description=data.get("description", ""), samples=data.get("samples", 5), gate=gate,
                 judge_model=data.get("judge_model"), cases_file=cases_file)


def _check_consistency(data: dict[str, Any], variants: list[Variant], cases: list[Case], problems: Problems,
                       src: str, lines: dict[tuple[str, ...], int]) -> None:
    names: set[str] = set()
    for i, v in enumerate(variants):
        if v.name in names:
            problems.add(src, lines, ("variants", i, "name"), f"duplicate variant name {v.name!r}")
        names.add(v.name)
        if not v.prompt and not v.model:
            problems.add(src, lines, ("variants", i), "a variant needs a model or a prompt")
        bad = [k for k in RESERVED_PARAMS if k in v.params]
        if bad:
            problems.add(src, lines, ("variants", i, "params"), f"{', '.join(bad)} cannot be a param (use the variant's "
                         "own keys; evals send one non-streamed answer per request)")
        if not v.prompt and not v.messages:
            empty = [c.id for c in cases if not c.messages]
            if empty:
                problems.add(src, lines, ("variants", i), f"variant {v.name!r} has no prompt and no messages, so "
                             f"cases without messages/input cannot be sent: {', '.join(empty[:5])}")
    baseline = data.get("gate", {}).get("baseline")
    if baseline is not None and baseline not in names:
        problems.add(src, lines, ("gate", "baseline"), f"no variant named {baseline!r} (variants: {', '.join(names)})")
    if not cases and not problems.items:
        problems.add(src, lines, (), "the suite has no cases (add `cases:` or `cases_file:`)")
    seen: dict[str, str] = {}
    for c in cases:
        if c.id in seen:
            problems.items.append(f"{c.where}: duplicate case id {c.id!r} (first at {seen[c.id]})")
        seen.setdefault(c.id, c.where)
