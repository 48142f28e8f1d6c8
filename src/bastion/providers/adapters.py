"""The concrete adapters: OpenAI (and every OpenAI-compatible server), Azure OpenAI, Anthropic, sim."""

from __future__ import annotations

from bastion.config.model import ProviderConfig
from bastion.scrub import Scrubber

from .base import Provider


class OpenAIProvider(Provider):
    """OpenAI and any OpenAI-compatible base URL (vLLM, Ollama, llama.cpp server, Groq, Together…)."""

    dialect = "openai"
    default_base_url = "https://api.openai.com/v1"

    def chat_url(self, model: str) -> str:
        return f"{self.base_url}/chat/completions"

    def embeddings_url(self, model: str) -> str:
        return f"{self.base_url}/embeddings"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}


class SimProvider(OpenAIProvider):
    """The built-in simulator, spoken to as an OpenAI-compatible server."""

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or 'sim'}"}


class AzureOpenAIProvider(Provider):
    """Azure OpenAI: the deployment name goes in the path, the key in ``api-key``."""

    dialect = "openai"
    default_api_version = "2024-10-21"

    def _url(self, model: str, what: str) -> str:
        version = self.config.api_version or self.default_api_version
        return f"{self.base_url}/openai/deployments/{model}/{what}?api-version={version}"

    def chat_url(self, model: str) -> str:
        return self._url(model, "chat/completions")

    def embeddings_url(self, model: str) -> str:
        return self._url(model, "embeddings")

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"api-key": key} if key else {}


class AnthropicProvider(Provider):
    dialect = "anthropic"
    default_base_url = "https://api.anthropic.com"
    default_api_version = "2023-06-01"

    def __init__(self, name: str, config: ProviderConfig, scrubber: Scrubber | None = None) -> None:
        super().__init__(name, config, scrubber)
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]

    def chat_url(self, model: str) -> str:
        return f"{self.base_url}/v1/messages"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.config.api_version or self.default_api_version}
        if key:
            headers["x-api-key"] = key
        return headers


ADAPTERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "sim": SimProvider,
    "azure": AzureOpenAIProvider,
    "anthropic": AnthropicProvider,
}


def build_provider(name: str, config: ProviderConfig, scrubber: Scrubber | None = None) -> Provider:
    """The adapter for ``config.type``; its error messages go through ``scrubber`` (default: the process's)."""
    return ADAPTERS[config.type](name, config, scrubber)
