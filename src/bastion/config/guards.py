"""Guard policies: what each scanner does when it fires.

Globally under ``guards:``, per alias under ``models.<alias>.guards`` and per tenant under
``tenants.<name>.guards``. Each level lays only the fields it sets over the level below (global, then
alias, then tenant), section by section: ``models.x.guards.output.pii: redact`` changes that one action and
keeps every other output setting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .problems import Loc, raise_problems


def _yaml_off(v: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false: take it to mean "off"."""
    return "off" if v is False else v


Off = BeforeValidator(_yaml_off)
Action = Annotated[Literal["block", "redact", "flag", "log", "off"], Off]
# block: refuse (a clear error in the client's dialect); redact: rewrite the offending span and serve;
# flag: serve, mark the log row and say so in x-bastion-guard; log: only the log and metrics; off: no scan.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputGuardConfig(_Strict):
    action: Annotated[Literal["block", "flag", "log", "off"], Off] = Field(
        "flag", description="block: reject with 400 prompt_injection_detected; flag: serve and mark")
    threshold: float = Field(0.8, gt=0, le=1, description="score at which the action applies")
    classifier: bool = Field(True, description="also run the trained injection classifier (when shipped)")
    scan: Literal["user", "all"] = Field("user", description="user turns and untrusted content, or every message")


class UntrustedConfig(_Strict):
    """Content the caller marks untrusted (``"untrusted": true`` on a message or content part, see
    docs/guards.md) is scanned and wrapped in per-request delimiters the model is told to treat as data."""

    marking: Annotated[Literal["datamark", "delimit", "off"], Off] = Field(
        "delimit", description="delimit: per-request delimiters the model is told to treat as data; datamark: "
                               "also `marker` between words (spotlighting; costs tokens); off: unchanged (still scanned)")
    marker: str = Field("\u02c6", min_length=1, max_length=4,
                        description="datamark: what replaces whitespace (ˆ: +80% tokens on the marked text; _: +16%)")
    tool_results: bool = Field(False, description="also wrap tool results (always scanned as untrusted)")


class LeakGuardConfig(_Strict):
    action: Action = Field(
        "block", description="when the output contains the canary (a certain leak): block, redact (withhold "
                             "the answer), flag or log")
    fuzzy: Action = Field(
        "flag", description="when the output reproduces much of the system prompt (a likely leak, but also "
                            "what a RAG answer quoting documents placed in the system prompt does)")
    canary: bool = Field(True, description="add a per-request canary token to the system prompt")
    threshold: float = Field(0.35, gt=0, le=1,
                             description="share of the system prompt's content-word pairs that counts as a leak")


class OutputGuardConfig(_Strict):
    secrets: Action = Field("redact", description="API keys, tokens, private keys in the output")
    pii: Action = Field("log", description="e-mail, phone, card (Luhn), IBAN (mod-97), US SSN, IP addresses")
    images: Action = Field("redact", description="markdown/HTML images pointing at hosts not in allowed_hosts")
    links: Action = Field("log", description="links to hosts not in allowed_hosts")
    html: Annotated[Literal["redact", "flag", "log", "off"], Off] = Field(
        "off", description="redact strips tags and script/style blocks (for routes that render output as HTML)")
    allowed_hosts: tuple[str, ...] = Field(
        (), description="hosts images and links may point at; '*.example.com' covers subdomains")
    hold_back: int = Field(64, ge=0, le=4096, description="characters a stream holds back (at least 72)")
    threshold: float = Field(0.0, ge=0, le=1, description="findings scoring below this are ignored (IPs 0.6, "
                                                         "phones 0.7, generic secrets 0.6-0.8, keys 0.9-1.0)")


class RefusalGuardConfig(_Strict):
    action: Annotated[Literal["fallback", "flag", "log", "off"], Off] = Field(
        "log", description="fallback: re-ask the aliases in `fallback` (streams: judged on their opening); "
                           "flag; log; off")
    fallback: tuple[str, ...] = Field((), description="aliases to try, in order, when the answer is a refusal")
    threshold: float = Field(0.5, gt=0, le=1, description="refusal-detector score at which an answer is a refusal")


class JsonGuardConfig(_Strict):
    """Structured output: when the request asks for JSON (OpenAI response_format json_object/json_schema),
    the answer is validated; an invalid answer is re-asked once with the validation error (``repair``)."""

    action: Annotated[Literal["block", "flag", "log", "off"], Off] = Field(
        "flag", description="what to do with an answer that is still invalid after the repair retry: block "
                            "(422 output_invalid_json), flag (serve and mark), log")
    repair: bool = Field(True, description="one retry that shows the model its error (non-streamed answers)")


class ToolGuardConfig(_Strict):
    allowed: tuple[str, ...] | None = Field(
        None, description="tool names the model may call on this route (None: any tool the request declares)")
    action: Annotated[Literal["block", "flag", "log", "off"], Off] = Field(
        "block", description="a call to a tool not allowed, not declared, or with arguments invalid for its schema")
    schemas: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="JSON schema of a tool's arguments, overriding the request's own")
    irreversible: tuple[str, ...] = Field(
        (), description="tools never executed on the model's word alone: held for approval when the "
                        "conversation holds untrusted or flagged content")
    hold_when: Literal["untrusted", "flagged", "always"] = Field(
        "untrusted", description="untrusted: untrusted content or a flagged input; flagged: a flagged input "
                                 "only; always: every call to an irreversible tool")

    @field_validator("schemas")
    @classmethod
    def _schemas_are_objects(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from bastion.guards.structured import schema_problem

        problems: list[tuple[Loc, str]] = []
        for name, schema in v.items():
            if not isinstance(schema, dict):
                problems.append(((name,), "must be a JSON schema object"))
            elif problem := schema_problem(schema):
                problems.append(((name,), problem))
        raise_problems("ToolGuardConfig", problems, None)
        return v


class GuardsConfig(_Strict):
    input: InputGuardConfig = InputGuardConfig()
    untrusted: UntrustedConfig = UntrustedConfig()
    leak: LeakGuardConfig = LeakGuardConfig()
    output: OutputGuardConfig = OutputGuardConfig()
    refusal: RefusalGuardConfig = RefusalGuardConfig()
    json_output: JsonGuardConfig = Field(JsonGuardConfig(), alias="json")
    tools: ToolGuardConfig = ToolGuardConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def overlay(base: GuardsConfig, top: GuardsConfig | None) -> GuardsConfig:
    """``top``'s explicitly set fields laid over ``base``, section by section."""
    if top is None:
        return base
    updates: dict[str, Any] = {}
    for section in top.model_fields_set:
        mine = getattr(top, section)
        theirs = getattr(base, section)
        updates[section] = theirs.model_copy(update={f: getattr(mine, f) for f in mine.model_fields_set})
    return base.model_copy(update=updates)
