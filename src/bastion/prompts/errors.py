"""The errors of the prompt registry, each with what to fix.

``PromptNotFound`` and ``PromptRenderError`` reach API clients (404 and 400). ``PromptSpecError`` is a bad
file in the user's repository: a ``ConfigError`` (the CLI prints its problems and exits 2; the gateway
keeps the last good version of the prompt and reports the problem in ``PromptRegistry.errors``).
"""

from __future__ import annotations

from bastion.errors import BastionError, ConfigError


class PromptNotFound(BastionError):
    """No prompt, label, version or hash matches the reference; the message lists what exists."""

    status = 404
    code = "prompt_not_found"


class PromptRenderError(BastionError):
    """The variables do not fit the prompt's declaration: missing, unknown or wrongly typed."""

    status = 400
    code = "prompt_variables_invalid"


class PromptTemplateError(PromptRenderError):
    """A template failed while rendering (a sandbox violation, an operation on the wrong type, ...)."""

    code = "prompt_render_failed"


class PromptLabelError(BastionError):
    """A label operation that cannot be done: a bad label name, or a rollback with no earlier version."""

    status = 409
    code = "prompt_label_error"


class PromptSpecError(ConfigError):
    """A prompt file or the lock file is invalid. ``problems`` each start with ``file:line``."""

    def __init__(self, problems: list[str] | str) -> None:
        super().__init__([problems] if isinstance(problems, str) else list(problems))

    @property
    def message(self) -> str:
        return "; ".join(self.problems)
