"""Load ``bastion.yaml``: parse, validate, and report each problem with its key path and line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bastion.errors import ConfigError

from .defaults import default_config_dict
from .model import BastionConfig

CONFIG_ENV = "BASTION_CONFIG"


def _line_index(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_index(value_node, path + (key,), out)
            out[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (str(i),), out)


def _describe(err: dict[str, Any], lines: dict[tuple[str, ...], int], source: str) -> str:
    loc = tuple(str(p) for p in err["loc"])
    # pydantic adds the validator name for model-level errors; keep only real keys
    path = ".".join(loc) or "(top level)"
    line = None
    probe = loc
    while probe:
        if probe in lines:
            line = lines[probe]
            break
        probe = probe[:-1]
    where = f"{source}:{line}" if line else source
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/configuration.md)"
    return f"{where}: {path}: {msg}"


def parse_config(text: str, source: str = "bastion.yaml") -> BastionConfig:
    """Parse YAML text into a validated config, or raise ConfigError listing every problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError([f"{where}: not valid YAML: {getattr(e, 'problem', e)}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the top level must be a mapping of sections (server, models, ...)"])
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    try:
        return BastionConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError([_describe(err, lines, source) for err in e.errors()]) from None


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
    return parse_config(p.read_text(encoding="utf-8"), str(p)), str(p)
