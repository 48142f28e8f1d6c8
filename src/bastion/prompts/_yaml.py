"""YAML in and out for prompts: strict loading with line numbers, readable block-style dumping.

Loading rejects duplicate keys (PyYAML silently keeps the last one, which hides mistakes) and returns an
index from key path to line so that validation errors can say where. Dumping writes multi-line strings
as literal blocks (``|``) so message templates read, and diff, as the text they are.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

Lines = dict[tuple[str, ...], int]
_MERGE = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    raise ConstructorError(None, None, f"duplicate key {key_node.value!r} (first on line "
                                           f"{seen[key_node.value]})", key_node.start_mark)
                seen[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


def _index(node: yaml.Node, path: tuple[str, ...], out: Lines) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            _index(value_node, path + (key,), out)
            out[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, path + (str(i),), out)


def load(text: str, source: str) -> tuple[Any, Lines]:
    """Parse one YAML document; raise ValueError("source:line: ...") on bad YAML or duplicate keys."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ValueError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()
    lines: Lines = {}
    if node is not None:
        _index(node, (), lines)
    return data, lines


def where(source: str, lines: Lines, *path: str | int) -> str:
    """``source:line`` for the closest key path we know a line for."""
    probe = tuple(str(p) for p in path)
    while probe:
        if probe in lines:
            return f"{source}:{lines[probe]}"
        probe = probe[:-1]
    return f"{source}:{lines[()]}" if () in lines else source


class _BlockDumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def dump(data: Any) -> str:
    """Block-style YAML, keys in the order given, multi-line strings as literal blocks."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=10_000,
                     default_flow_style=False)
