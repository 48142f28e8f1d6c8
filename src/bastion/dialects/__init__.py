"""Translation between client/upstream API dialects and Bastion's canonical (OpenAI chat) format."""

from .anthropic import (
    DEFAULT_MAX_TOKENS,
    DROPPED_PARAMETERS,
    ChatToMessagesStream,
    MessagesToChatStream,
    anthropic_usage_from_chat,
    chat_request_to_messages,
    chat_response_to_messages,
    chat_usage_from_anthropic,
    messages_request_to_chat,
    messages_response_to_chat,
    upstream_error_from_event,
)

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
