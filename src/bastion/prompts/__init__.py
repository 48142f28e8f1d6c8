"""Prompts as code: prompt files in the user's repository, versioned by content hash, with labels.

See docs/prompts.md. The gateway uses ``PromptRegistry.from_config(config.prompts)``, calls
``reload_if_changed()`` periodically and ``render("name@label", variables)`` per request.

The names below are imported on first use, so that ``bastion`` commands that never touch prompts do not
pay for importing Jinja2 (``bastion.cli`` registers ``bastion.prompts.cli`` for every invocation).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        PromptLabelError,
        PromptNotFound,
        PromptRenderError,
        PromptSpecError,
        PromptTemplateError,
    )
    from .registry import PromptRegistry, PromptVersion, Rendered

_EXPORTS = {
    "PromptLabelError": "errors",
    "PromptNotFound": "errors",
    "PromptRenderError": "errors",
    "PromptSpecError": "errors",
    "PromptTemplateError": "errors",
    "PromptRegistry": "registry",
    "PromptVersion": "registry",
    "Rendered": "registry",
}
__all__ = [
    "PromptLabelError",
    "PromptNotFound",
    "PromptRegistry",
    "PromptRenderError",
    "PromptSpecError",
    "PromptTemplateError",
    "PromptVersion",
    "Rendered",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion.prompts' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
