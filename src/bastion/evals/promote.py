"""Turn a logged production request into an eval case, appended to the suite's JSONL cases file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .model import SuiteError
from .suite import Problems, read_case_rows


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _messages(body: dict[str, Any], dialect: str) -> list[dict[str, Any]]:
    """The request's own messages, as OpenAI-style chat messages (Anthropic's system becomes a system message)."""
    out: list[dict[str, Any]] = []
    if dialect == "anthropic" and body.get("system"):
        out.append({"role": "system", "content": _text_of(body["system"])})
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if dialect == "anthropic" or not isinstance(content, str | None):
            content = _text_of(content) if not isinstance(content, str) else content
        msg = {"role": m.get("role", "user"), "content": content}
        if m.get("name"):
            msg["name"] = m["name"]
        out.append(msg)
    return out


def answer_of(response: Any, dialect: str) -> str | None:
    """The text the client received, from a logged response body."""
    if not isinstance(response, dict):
        return None
    if "choices" in response:
        choices = response.get("choices") or []
        return _text_of((choices[0].get("message") or {}).get("content")) if choices else None
    if "content" in response:  # Anthropic
        return _text_of(response["content"])
    return None


def case_from_log(row: dict[str, Any], *, as_reference: bool = False) -> dict[str, Any]:
    """A case (as a JSON-able dict) from a request-log row; raises ValueError when it cannot be one."""
    body = row.get("request")
    rid = row.get("id", "?")
    if not isinstance(body, dict):
        raise ValueError(f"request {rid} was logged without its body (store.log_bodies: false?); it cannot become a case")
    if row.get("endpoint") not in (None, "chat", "messages"):
        raise ValueError(f"request {rid} is a {row.get('endpoint')} request; only chat requests can become cases")
    dialect = row.get("dialect") or "openai"
    case: dict[str, Any] = {"id": f"log-{rid.removeprefix('req_')}"}
    prompt = body.get("prompt")
    if isinstance(prompt, dict) and prompt.get("variables"):
        case["vars"] = prompt["variables"]
    messages = _messages(body, dialect)
    if messages:
        case["messages"] = messages
    if "vars" not in case and not messages:
        raise ValueError(f"request {rid} has neither messages nor prompt variables")
    if as_reference:
        answer = answer_of(row.get("response"), dialect)
        if not answer:
            raise ValueError(f"request {rid} has no logged text answer to use as a reference (status {row.get('status')})")
        case["reference"] = answer
    meta = {k: row.get(k) for k in ("alias", "served_model", "prompt_version", "received_at") if row.get(k) is not None}
    case["metadata"] = {"source_request_id": rid, **meta}
    return case


def append_case(suite_path: str | Path, case: dict[str, Any]) -> Path:
    """Append ``case`` to the suite's cases file (JSONL). Without one, ``<suite>.cases.jsonl`` is created
    and ``cases_file:`` added to the suite (comments and layout of the suite are kept)."""
    suite = Path(suite_path)
    if not suite.is_file():
        raise SuiteError([f"{suite}: suite file not found"])
    text = suite.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise SuiteError([f"{suite}:1: not a suite (a mapping with variants and cases)"])
    rel = data.get("cases_file")
    if rel is None:
        rel = f"{suite.stem}.cases.jsonl"
        sep = "" if text.endswith("\n") or not text else "\n"
        suite.write_text(text + sep + f"cases_file: {rel}\n", encoding="utf-8")
    target = suite.parent / rel
    if target.suffix.lower() == ".csv":
        raise SuiteError([f"{suite}: cases_file {rel} is CSV; promote-log appends to a JSONL cases file"])
    problems = Problems()
    existing = {str(raw.get("id")) for raw, _ in read_case_rows(target, problems)} if target.exists() else set()
    existing |= {str(c.get("id")) for c in data.get("cases") or [] if isinstance(c, dict)}
    if case["id"] in existing:
        raise ValueError(f"case {case['id']} is already in the suite")
    prefix = ""
    if target.exists() and target.stat().st_size and not target.read_bytes().endswith(b"\n"):
        prefix = "\n"
    with target.open("a", encoding="utf-8") as f:
        f.write(prefix + json.dumps(case, ensure_ascii=False) + "\n")
    return target
