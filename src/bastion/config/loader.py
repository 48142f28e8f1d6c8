"""Load ``bastion.yaml``: parse strictly, validate, and report every problem with its line and key path.

Parsing is ``bastion.yamlfile`` (the loader of every file a user writes): a repeated key is an error naming
both lines. Every validation error, those of the model validators included (they raise each problem at
its own key path, see ``problems.py``), is reported as ``file:line: key.path: message``; an unknown key
is named with the close matches among the keys that model knows.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from bastion import yamlfile
from bastion.errors import ConfigError

from .defaults import default_config_dict
from .model import BastionConfig

CONFIG_ENV = "BASTION_CONFIG"


def _step(tp: Any, key: str | int) -> Any:
    """The type found under ``key`` inside a value of type ``tp`` (None when the path leaves the model)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _step(get_args(tp)[0], key)
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            if arg is not type(None) and (found := _step(arg, key)) is not None:
                return found
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, field in tp.model_fields.items():
            if key in (name, field.alias):
                return field.annotation
        return None
    if origin is dict:
        return get_args(tp)[1]
    if origin in (list, tuple) and isinstance(key, int):
        return get_args(tp)[0]
    return None


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts (empty when ``loc`` is not a model)."""
    tp: Any = BastionConfig
    for part in loc:
        tp = _step(tp, part)
    models = [a for a in get_args(tp) if isinstance(a, type)] if get_origin(tp) in (Union, types.UnionType) else [tp]
    for m in models:
        if isinstance(m, type) and issubclass(m, BaseModel):
            return [f.alias or name for name, f in m.model_fields.items()]
    return []


def _describe(err: ErrorDetails, lines: yamlfile.Lines, source: str) -> tuple[int, str]:
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "(top level)"
    line = yamlfile.line_of(lines, *loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden" and loc:
        msg = yamlfile.suggest(str(loc[-1]), _known_keys(loc[:-1]))
    return line or 0, f"{source}:{line}: {path}: {msg}" if line else f"{source}: {path}: {msg}"


def parse_config(text: str, source: str = "bastion.yaml") -> BastionConfig:
    """Parse YAML text into a validated config, or raise ConfigError listing every problem (by line)."""
    try:
        data, lines = yamlfile.load(text, source)
    except yamlfile.YamlError as e:
        raise ConfigError(e.problems) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the top level must be a mapping of sections (server, models, ...)"])
    try:
        return BastionConfig.model_validate(data)
    except ValidationError as e:
        described = sorted((_describe(err, lines, source) for err in e.errors()), key=lambda d: d[0])
        raise ConfigError([msg for _, msg in described]) from None


def load_config(path: str | os.PathLike[str] | None = None) -> tuple[BastionConfig, str]:
    """Load the config from ``path``, ``$BASTION_CONFIG`` or ``./bastion.yaml``; else the embedded default.

    Returns the config and a description of where it came from.
    """
    candidate = path or os.environ.get(CONFIG_ENV)
    if candidate is None and Path("bastion.yaml").exists():
        candidate = "bastion.yaml"
    if candidate is None:
        return BastionConfig.model_validate(default_config_dict()), "embedded default"
    p = Path(candidate)
    if not p.exists():
        raise ConfigError([f"{p}: config file not found"])
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{p}: cannot read the config file: {e}"]) from None
    return parse_config(text, str(p)), str(p)
