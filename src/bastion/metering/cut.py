"""What a stream cut short is billed for: the client hung up, or the upstream broke off, before the
upstream's usage arrived.

The upstream was paid for what it received and what it sent: the prompt as sent upstream (guard additions
included) and the answer text relayed so far. Both are counted with the offline tokenizer
(``Meter.estimate_usage``); whatever the upstream itself reported wins, part by part: its prompt count
when it sent one (Anthropic's ``message_start``), its completion count once it is final (OpenAI's usage
chunk, Anthropic's ``message_delta``), and never less than it reported.
"""

from __future__ import annotations

from typing import Any


def _int(usage: dict[str, Any], *keys: str) -> int:
    return sum(v for k in keys if isinstance(v := usage.get(k), int))


def cut_usage(raw: dict[str, Any] | None, dialect: str, estimate: dict[str, int], final: bool,
              ) -> tuple[dict[str, Any], str, bool]:
    """(usage, its dialect, whether any part of it is an estimate) for a stream cut short.

    ``raw`` is the usage the upstream reported so far, in ``dialect`` (``openai`` or ``anthropic``
    shape); ``estimate`` is the offline count, OpenAI-shaped; ``final``: the upstream's usage is complete
    (its own counts win entirely)."""
    raw = dict(raw or {})
    if dialect == "anthropic":
        prompt = _int(raw, "input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
        completion = _int(raw, "output_tokens")
        p_key, c_key = "input_tokens", "output_tokens"
    else:
        prompt, completion = _int(raw, "prompt_tokens"), _int(raw, "completion_tokens")
        p_key, c_key = "prompt_tokens", "completion_tokens"
    if final and prompt + completion > 0:
        return raw, dialect, False
    estimated = False
    if prompt == 0 and estimate.get("prompt_tokens", 0) > 0:
        raw[p_key] = estimate["prompt_tokens"]
        estimated = True
    if estimate.get("completion_tokens", 0) > completion:
        raw[c_key] = estimate["completion_tokens"]
        estimated = True
    if dialect != "anthropic":
        raw["total_tokens"] = _int(raw, "prompt_tokens", "completion_tokens")
    return raw, dialect, estimated
