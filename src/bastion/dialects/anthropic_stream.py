"""Streaming translators: Anthropic SSE events <-> OpenAI ``chat.completion.chunk`` dicts.

Both are small state machines fed one parsed event/chunk at a time; they do no I/O.

Error behaviour (see docs/dialects.md):
- ``MessagesToChatStream.feed("error", ...)`` raises :class:`bastion.errors.UpstreamError` carrying the
  upstream message, type and body; the caller turns it into an error for its client.
- ``ChatToMessagesStream.finish()`` after a stream that ended without a ``finish_reason`` returns no
  ``message_delta``/``message_stop``: the stream is incomplete and the caller must emit an ``error`` event.
  A chunk carrying an ``error`` object raises :class:`UpstreamError` too.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bastion.errors import UpstreamError
from bastion.scrub import process_scrubber, scrub

from ._common import chat_id_for, finish_reason_for, message_id_for, stop_reason_for
from .anthropic_response import anthropic_usage_from_chat, chat_usage_from_anthropic

# Anthropic error type -> (HTTP status we report, retryable).
_ANTHROPIC_ERROR_STATUS: dict[str, tuple[int, bool]] = {
    "invalid_request_error": (400, False),
    "authentication_error": (502, False),
    "permission_error": (502, False),
    "not_found_error": (502, False),
    "request_too_large": (413, False),
    "rate_limit_error": (429, True),
    "api_error": (502, True),
    "overloaded_error": (503, True),
    "timeout_error": (504, True),
}


def upstream_error_from_event(data: dict[str, Any]) -> UpstreamError:
    """An :class:`UpstreamError` for an Anthropic ``error`` event (or error body)."""
    err = e if isinstance(e := data.get("error"), dict) else {}
    kind = err.get("type") or "api_error"
    message = err.get("message") or "the upstream reported an error mid-stream"
    status, retryable = _ANTHROPIC_ERROR_STATUS.get(kind, (502, True))
    return UpstreamError(
        scrub(f"upstream error ({kind}): {message}"),
        status=status,
        code=kind,
        upstream_body=process_scrubber().value(data),  # upstreams quote the key they were sent
        retryable=retryable,
    )


class MessagesToChatStream:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` dicts out."""

    def __init__(self, *, model: str | None = None, include_usage: bool = True) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = "chatcmpl-unknown"
        self._created = int(time.time())
        self._started = False
        self._blocks: dict[int, tuple[str, int]] = {}  # Anthropic block index -> (kind, OpenAI tool index)
        self._tool_count = 0
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._finish_sent = False
        self._usage_sent = False
        self._done = False

    @property
    def done(self) -> bool:
        """True once ``message_stop`` was seen: the upstream finished the answer."""
        return self._done

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    def feed(self, event_type: str, data: dict) -> list[dict]:
        if event_type == "error":
            raise upstream_error_from_event(data)
        if event_type == "ping" or self._done:
            return []
        out: list[dict] = []
        if event_type == "message_start":
            message = data.get("message") or {}
            if message.get("id"):
                self._id = chat_id_for(message["id"])
            self._model = self._model or message.get("model")
            self._merge_usage(message.get("usage"))
            out.extend(self._start())
        elif not self._started:
            out.extend(self._start())
        if event_type == "content_block_start":
            out.extend(self._block_start(data.get("index", 0), data.get("content_block") or {}))
        elif event_type == "content_block_delta":
            out.extend(self._block_delta(data.get("index", 0), data.get("delta") or {}))
        elif event_type == "message_delta":
            self._merge_usage(data.get("usage"))
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self._stop_reason = reason
                out.append(self._finish_chunk())
        elif event_type == "message_stop":
            self._done = True
            if not self._finish_sent:
                out.append(self._finish_chunk())
            out.extend(self._usage_chunk())
        return out

    def finish(self) -> list[dict]:
        """Chunks still owed at the end of the byte stream.

        Never fabricates a ``finish_reason``: if the upstream stopped before ``message_delta``, nothing is
        returned and ``done`` stays False so that the caller reports a truncated stream. If only the final
        ``message_stop`` was lost, the usage chunk is still delivered.
        """
        if self._done or not self._finish_sent:
            return []
        return self._usage_chunk()

    # --- internals --------------------------------------------------------------------------------

    def _merge_usage(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model or "",
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def _start(self) -> list[dict]:
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict]:
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = ("text", -1)
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if kind == "tool_use":
            tool_index = self._tool_count
            self._tool_count += 1
            self._blocks[index] = ("tool", tool_index)
            call = {
                "index": tool_index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "thinking":
            self._blocks[index] = ("thinking", -1)
            text = block.get("thinking")
            return [self._chunk({"reasoning_content": text})] if text else []
        self._blocks[index] = ("ignored", -1)  # redacted_thinking, server tools: no OpenAI form
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict]:
        kind, tool_index = self._blocks.get(index, ("ignored", -1))
        dtype = delta.get("type")
        if dtype == "text_delta" and kind == "text" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if dtype == "input_json_delta" and kind == "tool" and delta.get("partial_json"):
            call = {"index": tool_index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        if dtype == "thinking_delta" and kind == "thinking" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        return []  # signature_delta, citations_delta, empty fragments

    def _finish_chunk(self) -> dict:
        self._finish_sent = True
        return self._chunk({}, finish_reason_for(self._stop_reason))

    def _usage_chunk(self) -> list[dict]:
        if not self._include_usage or self._usage_sent:
            return []
        self._usage_sent = True
        chunk = self._chunk({})
        chunk["choices"] = []
        chunk["usage"] = chat_usage_from_anthropic(self._usage)
        return [chunk]


class ChatToMessagesStream:
    """OpenAI ``chat.completion.chunk`` dicts in, Anthropic ``(event_type, data)`` pairs out.

    Emits message_start, ping, then content blocks (text and tool_use; a switch of kind or of tool
    index closes the open block), then message_delta and message_stop. ``message_delta`` waits for the
    usage chunk (which OpenAI sends after the finish_reason chunk) or for :meth:`finish`.
    """

    def __init__(self, *, model: str, message_id: str | None = None, input_tokens: int = 0) -> None:
        self._model = model
        self._message_id = message_id
        self._input_tokens = input_tokens
        self._started = False
        self._index = -1  # Anthropic index of the last opened block
        self._open: str | None = None  # "text" | "tool" while a block is open
        self._open_tool: int | None = None
        self._seen_tools: set[int] = set()
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._ended = False

    @property
    def done(self) -> bool:
        """True once message_stop was emitted."""
        return self._ended

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        if isinstance(chunk.get("error"), dict):
            err = chunk["error"]
            raise UpstreamError(
                scrub(f"upstream error: {err.get('message') or 'error in stream'}"),
                code=str(err.get("code") or err.get("type") or "upstream_error"),
                upstream_body=process_scrubber().value(chunk),
            )
        if self._ended:
            return []
        out: list[tuple[str, dict]] = []
        if not self._started:
            out.extend(self._start(chunk))
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n > 1 is rejected for Anthropic clients; ignore extra choices
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                out.extend(self._text(text))
            for position, call in enumerate(delta.get("tool_calls") or []):
                out.extend(self._tool(call, position))
            if choice.get("finish_reason"):
                out.extend(self._close())
                self._stop_reason = stop_reason_for(choice["finish_reason"])
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        if self._stop_reason is not None and self._usage is not None:
            out.extend(self._end())
        return out

    def finish(self) -> list[tuple[str, dict]]:
        """Events still owed when the upstream stream ends.

        If no finish_reason was received the upstream broke off: nothing is returned (no message_stop),
        ``done`` stays False, and the caller must send an Anthropic ``error`` event.
        """
        if self._ended or self._stop_reason is None:
            return []
        return self._end()

    # --- internals --------------------------------------------------------------------------------

    def _start(self, chunk: dict) -> list[tuple[str, dict]]:
        self._started = True
        if self._message_id is None:
            chunk_id = chunk.get("id")
            self._message_id = message_id_for(chunk_id) if chunk_id else f"msg_{uuid.uuid4().hex[:24]}"
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[tuple[str, dict]]:
        out = self._close()
        self._index += 1
        self._open = kind
        out.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": block},
            )
        )
        return out

    def _close(self) -> list[tuple[str, dict]]:
        if self._open is None:
            return []
        self._open = None
        self._open_tool = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict]:
        return ("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _text(self, text: str) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        if self._open != "text":
            out.extend(self._open_block("text", {"type": "text", "text": ""}))
        out.append(self._delta({"type": "text_delta", "text": text}))
        return out

    def _tool(self, call: dict[str, Any], position: int) -> list[tuple[str, dict]]:
        tool_index = call.get("index", position)
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        out: list[tuple[str, dict]] = []
        if self._open != "tool" or self._open_tool != tool_index:
            if tool_index in self._seen_tools:
                if not arguments:
                    return []
                raise UpstreamError(
                    f"upstream interleaved the arguments of tool call {tool_index} with another block; "
                    "this cannot be translated to an Anthropic stream",
                    code="untranslatable_stream",
                )
            self._seen_tools.add(tool_index)
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": function.get("name") or "",
                "input": {},
            }
            out.extend(self._open_block("tool", block))
            self._open_tool = tool_index
        if arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return out

    def _end(self) -> list[tuple[str, dict]]:
        self._ended = True
        out = self._close()
        usage: dict[str, Any] = {"output_tokens": 0}
        if self._usage is not None:
            converted = anthropic_usage_from_chat(self._usage)
            usage = {
                "output_tokens": converted["output_tokens"],
                "input_tokens": converted["input_tokens"],
                "cache_read_input_tokens": converted["cache_read_input_tokens"],
            }
            if converted["cache_creation_input_tokens"]:
                usage["cache_creation_input_tokens"] = converted["cache_creation_input_tokens"]
        delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
        out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out
