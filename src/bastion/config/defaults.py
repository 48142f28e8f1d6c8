"""The embedded default: the simulator's models, plus OpenAI/Anthropic models when their keys are set."""

from __future__ import annotations

import os
from typing import Any

SIM_URL_ENV = "BASTION_SIM_URL"
DEFAULT_SIM_URL = "http://127.0.0.1:8001"

OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini")
OPENAI_EMBEDDINGS = ("text-embedding-3-small", "text-embedding-3-large")
ANTHROPIC_MODELS = {
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
}


def default_config_dict(env: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ) if env is None else env
    sim_url = env.get(SIM_URL_ENV, DEFAULT_SIM_URL).rstrip("/")
    providers: dict[str, Any] = {
        "sim": {"type": "sim", "base_url": f"{sim_url}/v1"},
        "sim-anthropic": {"type": "anthropic", "base_url": sim_url},
    }
    models: dict[str, Any] = {
        "sim-small": {"deployments": [{"provider": "sim", "model": "sim-small"}]},
        "sim-large": {"deployments": [{"provider": "sim", "model": "sim-large"}]},
        "sim-claude": {
            "description": "the simulator speaking Anthropic's Messages API",
            "deployments": [{"provider": "sim-anthropic", "model": "sim-claude"}],
        },
        "sim-embed": {"kind": "embedding", "deployments": [{"provider": "sim", "model": "sim-embed"}]},
    }
    if env.get("OPENAI_API_KEY"):
        providers["openai"] = {"type": "openai", "api_key_env": "OPENAI_API_KEY"}
        for m in OPENAI_MODELS:
            models[m] = {"deployments": [{"provider": "openai", "model": m}]}
        for m in OPENAI_EMBEDDINGS:
            models[m] = {"kind": "embedding", "deployments": [{"provider": "openai", "model": m}]}
    if env.get("ANTHROPIC_API_KEY"):
        providers["anthropic"] = {"type": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"}
        for alias, pinned in ANTHROPIC_MODELS.items():
            models[alias] = {"deployments": [{"provider": "anthropic", "model": pinned}]}
    return {
        "store": {"url": env.get("BASTION_STORE_URL", "sqlite:///.bastion/bastion.db")},
        "providers": providers,
        "models": models,
        "tenants": {"default": {}},
        "prompts": {"dir": env.get("BASTION_PROMPTS_DIR", "prompts")},
        # Deterministic (temperature-0 or seeded) answers are cached: repeat one and see `x-bastion-cache: hit`.
        "cache": {"enabled": True},
    }
