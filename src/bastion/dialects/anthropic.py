"""Anthropic Messages <-> OpenAI Chat Completions translation (the canonical format is OpenAI's).

Requests: :func:`messages_request_to_chat` (Anthropic client) and :func:`chat_request_to_messages`
(Anthropic upstream). Responses: :func:`messages_response_to_chat`, :func:`chat_response_to_messages`.
Streams: :class:`MessagesToChatStream`, :class:`ChatToMessagesStream`. See docs/dialects.md.
"""

from __future__ import annotations

from .anthropic_request import messages_request_to_chat
from .anthropic_response import (
    anthropic_usage_from_chat,
    chat_response_to_messages,
    chat_usage_from_anthropic,
    messages_response_to_chat,
)
from .anthropic_stream import ChatToMessagesStream, MessagesToChatStream, upstream_error_from_event
from .chat_request import DEFAULT_MAX_TOKENS, DROPPED_PARAMETERS, chat_request_to_messages

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DROPPED_PARAMETERS",
    "ChatToMessagesStream",
    "MessagesToChatStream",
    "anthropic_usage_from_chat",
    "chat_request_to_messages",
    "chat_response_to_messages",
    "chat_usage_from_anthropic",
    "messages_request_to_chat",
    "messages_response_to_chat",
    "upstream_error_from_event",
]
