"""Assemble a streamed answer into the response the client effectively received, for the request log."""

from __future__ import annotations

from typing import Any

import orjson


def usage_from_openai(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    out = {k: int(usage[k]) for k in ("prompt_tokens", "completion_tokens", "total_tokens") if isinstance(usage.get(k), int)}
    if "total_tokens" not in out and "prompt_tokens" in out and "completion_tokens" in out:
        out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    return out


def usage_from_anthropic(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    inp = sum(int(usage.get(k) or 0) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))
    out = int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}


class OpenAIStreamAccumulator:
    """Feeds on chat.completion.chunk dicts; ``result()`` is the equivalent chat.completion."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.usage: dict[str, Any] | None = None
        self.choices: dict[int, dict[str, Any]] = {}
        self.saw_token = False

    def feed(self, chunk: dict[str, Any]) -> None:
        self.id = self.id or chunk.get("id")
        self.model = chunk.get("model") or self.model
        self.created = self.created or chunk.get("created")
        if chunk.get("system_fingerprint"):
            self.system_fingerprint = chunk["system_fingerprint"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            idx = c.get("index", 0)
            st = self.choices.setdefault(
                idx, {"content": [], "tool_calls": {}, "finish_reason": None, "logprobs": [], "refusal": []}
            )
            delta = c.get("delta") or {}
            if delta.get("content"):
                st["content"].append(delta["content"])
                self.saw_token = True
            if delta.get("refusal"):
                st["refusal"].append(delta["refusal"])
                self.saw_token = True
            for tc in delta.get("tool_calls") or ():
                self.saw_token = True
                slot = st["tool_calls"].setdefault(
                    tc.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    slot["function"]["arguments"] += fn["arguments"]
            lp = c.get("logprobs")
            if isinstance(lp, dict) and lp.get("content"):
                st["logprobs"].extend(lp["content"])
            if c.get("finish_reason"):
                st["finish_reason"] = c["finish_reason"]

    @property
    def finish_reason(self) -> str | None:
        c = self.choices.get(0)
        return c["finish_reason"] if c else None

    def result(self) -> dict[str, Any]:
        choices = []
        for idx in sorted(self.choices):
            st = self.choices[idx]
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(st["content"]) or None}
            if st["refusal"]:
                msg["refusal"] = "".join(st["refusal"])
            if st["tool_calls"]:
                msg["tool_calls"] = [st["tool_calls"][k] for k in sorted(st["tool_calls"])]
            choice: dict[str, Any] = {"index": idx, "message": msg, "finish_reason": st["finish_reason"]}
            if st["logprobs"]:
                choice["logprobs"] = {"content": st["logprobs"]}
            choices.append(choice)
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
            "choices": choices,
            "usage": self.usage,
        }


class AnthropicStreamAccumulator:
    """Feeds on Messages API stream events; ``result()`` is the equivalent message."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial_json: dict[int, list[str]] = {}
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.saw_token = False

    def feed(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type == "message_start":
            self.message = dict(data.get("message") or {})
            self.usage.update(self.message.get("usage") or {})
        elif event_type == "content_block_start":
            self.blocks[data.get("index", 0)] = dict(data.get("content_block") or {})
        elif event_type == "content_block_delta":
            idx = data.get("index", 0)
            block = self.blocks.setdefault(idx, {"type": "text", "text": ""})
            delta = data.get("delta") or {}
            kind = delta.get("type")
            self.saw_token = True
            if kind == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif kind == "input_json_delta":
                self.partial_json.setdefault(idx, []).append(delta.get("partial_json", ""))
            elif kind == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif event_type == "message_delta":
            delta = data.get("delta") or {}
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            self.stop_sequence = delta.get("stop_sequence") or self.stop_sequence
            self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})

    @property
    def model(self) -> str | None:
        return self.message.get("model")

    def result(self) -> dict[str, Any]:
        content = []
        for idx in sorted(self.blocks):
            block = dict(self.blocks[idx])
            if idx in self.partial_json:
                text = "".join(self.partial_json[idx])
                try:
                    block["input"] = orjson.loads(text) if text else {}
                except orjson.JSONDecodeError:
                    block["input"] = {"_unparsed": text}
            content.append(block)
        out = dict(self.message)
        out.update(content=content, stop_reason=self.stop_reason, stop_sequence=self.stop_sequence, usage=self.usage)
        return out
