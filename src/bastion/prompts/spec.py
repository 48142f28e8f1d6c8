"""A prompt file: parsing, validation, and its content hash.

Decisions:
- A prompt is ``<dir>/<name>.yaml``; the name is the file stem. ``name:`` inside the file is optional and,
  when present, must equal the stem. It is not part of the spec (nor of the hash): renaming is a new prompt.
- The spec is the parsed YAML as written (minus ``name``), with no defaults filled in, so the hash depends
  on the content only and never on this module's normalisation rules.
- The version identity is sha256 over the canonical JSON of the spec (sorted keys, no whitespace, UTF-8):
  comments, quoting, key order and indentation do not change it; any change of content does. Values must
  be JSON values (YAML dates and the like are refused) so that the serialisation is the same everywhere.
- Every problem is reported with ``file:line`` and the key path, all problems of a file at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion import yamlfile

from .errors import PromptSpecError
from .template import GLOBALS, check_template

FIELDS = ("name", "description", "model", "params", "response_format", "variables", "messages", "eval")
VARIABLE_FIELDS = ("type", "required", "default", "enum", "description")
TYPES = ("string", "integer", "number", "boolean", "array", "object")
ROLES = ("system", "developer", "user", "assistant")
# set by the request or by their own field, never by params
RESERVED_PARAMS = frozenset({"messages", "model", "stream", "response_format"})
RESERVED_VARIABLES = frozenset({"loop", "self", "varargs", "kwargs", "caller", "true", "false", "none",
                                "True", "False", "None"}) | GLOBALS
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_EVAL_LABELS = ("production",)


@dataclass(frozen=True)
class SpecFile:
    """A valid prompt file."""

    name: str
    path: Path
    spec: dict[str, Any]
    digest: str  # full sha256 hex


def canonical_json(spec: dict[str, Any]) -> bytes:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def spec_hash(spec: dict[str, Any]) -> str:
    """The full sha256 hex of a spec; show ``[:12]``."""
    return hashlib.sha256(canonical_json(spec)).hexdigest()


def type_matches(kind: str, value: Any) -> bool:
    """Whether ``value`` is of the declared variable type (booleans are not numbers)."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list | tuple)
    if kind == "object":
        return isinstance(value, dict)
    return False


def load_spec_file(path: Path) -> SpecFile:
    """Read and validate one prompt file; raise PromptSpecError listing every problem."""
    source = str(path)
    name = path.name.removesuffix(".yaml")
    if not NAME_RE.match(name):
        raise PromptSpecError(f"{source}: {name!r} is not a usable prompt name; use letters, digits, '.', '_' "
                              "and '-' (the name is the file name without .yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PromptSpecError(f"{source}: cannot read: {e}") from None
    try:
        data, lines = yamlfile.load(text, source)
    except yamlfile.YamlError as e:
        raise PromptSpecError(e.problems) from None
    if data is None:
        raise PromptSpecError(f"{source}: the file is empty; a prompt needs at least `messages:`")
    if not isinstance(data, dict):
        raise PromptSpecError(f"{source}:1: the top level must be a mapping (description, variables, messages, ...)")
    problems = []
    if "name" in data and data["name"] != name:
        problems.append(f"{yamlfile.where(source, lines, 'name')}: name: {data['name']!r} does not match the file "
                        f"name {name!r}; rename the file or remove `name:`")
    spec = {k: v for k, v in data.items() if k != "name"}
    problems += validate_spec(spec, source, lines)
    if problems:
        raise PromptSpecError(problems)
    return SpecFile(name=name, path=path, spec=spec, digest=spec_hash(spec))


def validate_spec(spec: Any, source: str, lines: yamlfile.Lines | None = None) -> list[str]:
    """Every problem of a spec (as parsed from a file or read back from the lock file)."""
    lines = lines or {}

    def at(*path: str | int) -> str:
        return f"{yamlfile.where(source, lines, *path)}: {'.'.join(str(p) for p in path)}"

    if not isinstance(spec, dict):
        return [f"{source}: a prompt spec must be a mapping"]
    problems = [f"{at(k)}: unknown key; known keys: {', '.join(FIELDS)}" for k in spec if k not in FIELDS]
    problems += _json_problems(spec, (), at)
    for key in ("description", "model"):
        if key in spec and not (isinstance(spec[key], str) and spec[key]):
            problems.append(f"{at(key)}: must be a non-empty string")
    params = spec.get("params", {})
    if not isinstance(params, dict):
        problems.append(f"{at('params')}: must be a mapping of sampling parameters (temperature, max_tokens, ...)")
    else:
        for key in sorted(RESERVED_PARAMS & set(params)):
            problems.append(f"{at('params', key)}: {key!r} cannot be a prompt parameter"
                            + ("; use the top-level `response_format:`" if key == "response_format" else ""))
    rf = spec.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and isinstance(rf.get("type"), str)):
        problems.append(f"{at('response_format')}: must be a mapping with a `type` (e.g. {{type: json_object}})")
    declared: set[str] = set()
    variables = spec.get("variables", {})
    if not isinstance(variables, dict):
        problems.append(f"{at('variables')}: must be a mapping of variable name to declaration ({{type: string}})")
    else:
        for var, decl in variables.items():
            problems += _variable_problems(str(var), decl, lambda *p, v=var: at("variables", v, *p))
            declared.add(str(var))
    messages = spec.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append(f"{at('messages')}: required: a non-empty list of {{role, content}}")
        messages = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append(f"{at('messages', i)}: must be a mapping with role and content")
            continue
        for key in m:
            if key not in ("role", "content", "name"):
                problems.append(f"{at('messages', i, key)}: unknown key; a message has role, content and name")
        if m.get("role") not in ROLES:
            problems.append(f"{at('messages', i, 'role')}: must be one of {', '.join(ROLES)}")
        content = m.get("content")
        if not isinstance(content, str):
            problems.append(f"{at('messages', i, 'content')}: must be a string (a Jinja2 template)")
            continue
        problems += [f"{at('messages', i, 'content')}: message {i} {p}" for p in check_template(content, declared)]
    problems += _eval_problems(spec.get("eval"), at)
    return problems


def _variable_problems(var: str, decl: Any, at: Any) -> list[str]:
    if not _IDENT.match(var) or var in RESERVED_VARIABLES:
        return [f"{at()}: {var!r} cannot be a variable name (letters, digits and _, not a Jinja name)"]
    if not isinstance(decl, dict):
        return [f"{at()}: must be a mapping, e.g. {{type: string}}"]
    problems = [f"{at(k)}: unknown key; known keys: {', '.join(VARIABLE_FIELDS)}" for k in decl
                if k not in VARIABLE_FIELDS]
    kind = decl.get("type")
    if kind not in TYPES:
        return problems + [f"{at('type')}: required, one of {', '.join(TYPES)}"]
    if "required" in decl and not isinstance(decl["required"], bool):
        problems.append(f"{at('required')}: must be true or false")
    if decl.get("required") is True and "default" in decl:
        problems.append(f"{at('required')}: a variable with a default is not required; remove one of them")
    enum = decl.get("enum")
    if enum is not None:
        if not isinstance(enum, list) or not enum:
            problems.append(f"{at('enum')}: must be a non-empty list")
            enum = None
        else:
            problems += [f"{at('enum', i)}: {v!r} is not a {kind}" for i, v in enumerate(enum)
                         if not type_matches(kind, v)]
    if "default" in decl:
        default = decl["default"]
        if default is not None and not type_matches(kind, default):
            problems.append(f"{at('default')}: {default!r} is not a {kind}")
        elif default is not None and enum is not None and default not in enum:
            problems.append(f"{at('default')}: {default!r} is not one of the enum values")
    return problems


def _eval_problems(block: Any, at: Any) -> list[str]:
    if block is None:
        return []
    if not isinstance(block, dict):
        return [f"{at('eval')}: must be a mapping {{suite: path, labels: [production]}}"]
    problems = [f"{at('eval', k)}: unknown key; known keys: suite, labels" for k in block
                if k not in ("suite", "labels")]
    if not (isinstance(block.get("suite"), str) and block["suite"]):
        problems.append(f"{at('eval', 'suite')}: required: the path of the eval suite")
    labels = block.get("labels", list(DEFAULT_EVAL_LABELS))
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        problems.append(f"{at('eval', 'labels')}: must be a list of label names")
    return problems


def eval_gate(spec: dict[str, Any], label: str) -> str | None:
    """The eval suite that must pass before ``label`` may point at this spec, if any."""
    block = spec.get("eval")
    if not isinstance(block, dict) or label not in block.get("labels", DEFAULT_EVAL_LABELS):
        return None
    return str(block["suite"])


def _json_problems(value: Any, path: tuple[str | int, ...], at: Any) -> list[str]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if not isinstance(k, str):
                out.append(f"{at(*path, k)}: keys must be strings; quote {k!r}")
            else:
                out += _json_problems(v, path + (k,), at)
        return out
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _json_problems(v, path + (i,), at)]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{at(*path)}: {value} is not a finite number"]
    if value is None or isinstance(value, str | int | float | bool):
        return []
    return [f"{at(*path)}: a {type(value).__name__} is not a JSON value; quote it"]


def readable(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with keys in a fixed reading order (top level as in FIELDS, the rest sorted): same data,
    deterministic layout for the lock file and diffs."""
    out: dict[str, Any] = {}
    for key in sorted(spec, key=lambda k: (FIELDS.index(k) if k in FIELDS else len(FIELDS), k)):
        value = spec[key]
        if key == "messages" and isinstance(value, list):
            out[key] = [_ordered(m, ("role", "name", "content")) for m in value]
        elif key == "variables" and isinstance(value, dict):
            out[key] = {v: _ordered(d, VARIABLE_FIELDS) for v, d in sorted(value.items())}
        else:
            out[key] = _ordered(value)
    return out


def _ordered(value: Any, first: tuple[str, ...] = ()) -> Any:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (first.index(k) if k in first else len(first), str(k)))
        return {k: _ordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    return value
